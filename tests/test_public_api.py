"""The public API: every exported name resolves, and `import dspex` stays light."""

from __future__ import annotations

import subprocess
import sys

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
