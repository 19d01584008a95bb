"""The public API: every exported name resolves, and `import dspex` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dspex


def test_every_exported_name_resolves() -> None:
    missing = [name for name in dspex.__all__ if getattr(dspex, name, None) is None]
    assert missing == []


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        dspex.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_dspex_loads_no_heavy_modules() -> None:
    code = (
        "import sys, dspex; "
        "heavy = [m for m in ('ray', 'optuna', 'aiohttp', 'pydantic', 'opentelemetry', 'rich', 'numpy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_aliases_match_dspy_names() -> None:
    assert dspex.BootstrapRS is dspex.BootstrapFewShotWithRandomSearch


def test_the_sandbox_is_reached_by_dspex_and_dspys_import_paths() -> None:
    from dspex.primitives.code_interpreter import CodeExecutionError, FinalOutput
    from dspex.primitives.python_interpreter import PythonInterpreter

    assert PythonInterpreter is dspex.PythonInterpreter
    assert FinalOutput is dspex.FinalOutput
    assert CodeExecutionError is dspex.CodeExecutionError
    assert issubclass(dspex.CodeSyntaxError, SyntaxError)
    assert issubclass(dspex.CodeExecutionError, dspex.CodeInterpreterError)


def test_import_dspex_optimizers_loads_no_optimizer_and_no_heavy_module() -> None:
    code = (
        "import sys, dspex.optimizers; "
        "heavy = [m for m in ('ray', 'optuna', 'aiohttp', 'pydantic', 'numpy', "
        "'dspex.optimizers.mipro', 'dspex.optimizers.copro') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_optimizer_export_resolves() -> None:
    import dspex.optimizers

    missing = [n for n in dspex.optimizers.__all__ if getattr(dspex.optimizers, n, None) is None]
    assert missing == []
    assert sorted(dspex.optimizers.__all__) == sorted(dspex.optimizers._EXPORTS)


def _readme_optimizers() -> list[str]:
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    paragraph = re.search(r"^Optimizers: (.*?)\n\n", text, re.M | re.S)
    assert paragraph is not None, "README has no 'Optimizers:' paragraph"
    return re.findall(r"`([A-Z]\w+)`", paragraph.group(1))


def test_every_optimizer_the_readme_names_imports_from_dspex_and_dspex_optimizers() -> None:
    import dspex.optimizers

    names = _readme_optimizers()
    assert {"BootstrapFewShot", "COPRO", "MIPROv2"} <= set(names)
    for name in names:
        assert getattr(dspex.optimizers, name) is getattr(dspex, name), name
