"""The runtime's actor names and namespace are defined once, in dspex.runtime.names."""

from __future__ import annotations

import ast
from pathlib import Path

import dspex
from dspex.runtime import names

PACKAGE_DIR = Path(dspex.__file__).resolve().parent
NAMES_FILE = PACKAGE_DIR / "runtime" / "names.py"

def _defined_names() -> set[str]:
    # The namespace, "dspex", is also the tracer's and loggers' name: checked by target below.
    return {
        value
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and value != names.NAMESPACE
    }


def _targets(node: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def test_no_module_but_names_defines_a_runtime_name() -> None:
    wanted = _defined_names()
    copies = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path == NAMES_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # A module- or class-level constant holding one of the names is a copy.
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                where = str(path.relative_to(PACKAGE_DIR))
                copied = value in wanted or "NAMESPACE" in _targets(node)
                if copied:
                    copies.append(f"{where}:{node.lineno} copies {value!r}")
    assert not copies, "import these from dspex.runtime.names instead:\n" + "\n".join(copies)


def test_the_runtime_package_re_exports_the_same_values() -> None:
    from dspex import runtime
    from dspex.runtime.supervision import application

    assert runtime.NAMESPACE == names.NAMESPACE and runtime.ROOT_SUPERVISOR == names.ROOT_SUPERVISOR
    assert application.CHILDREN == names.TREE_BRANCHES
