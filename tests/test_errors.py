"""`dspex.errors` holds every public exception, and its docstring draws the hierarchy."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pickle
import re
from pathlib import Path

import pytest

import dspex.errors
from dspex.errors import DspexError

PACKAGE = Path(dspex.errors.__file__).parent

# Public names the moved exceptions had before they moved, which users and tests import.
OLD_PATHS = [
    ("dspex.runtime", "RuntimeNotRunningError"),
    ("dspex.runtime", "ClusterUnreachableError"),
    ("dspex.runtime", "ClusterAuthError"),
    ("dspex.runtime.coordinator", "RunCancelledError"),
    ("dspex.runtime.runs", "CoordinatorUnavailableError"),
    ("dspex.runtime.serve", "ReplicaDiedError"),
    ("dspex.runtime.serve", "RemoteProgramError"),
    ("dspex.runtime.evaluation.ray_runner", "WorkerLostError"),
    ("dspex.runtime.evaluation.ray_runner", "RemoteExampleError"),
    ("dspex.runtime.supervision", "InvalidChildSpecError"),
    ("dspex.runtime.supervision.errors", "ChildStartError"),
    ("dspex.runtime.supervision.errors", "ServiceRestartedError"),
    ("dspex.primitives", "UnknownSettingError"),
    ("dspex.primitives.settings", "UnknownSettingError"),
    ("dspex.primitives", "MissingScoreError"),
    ("dspex.primitives", "InputKeysNotSetError"),
    ("dspex.optimizers", "SearchError"),
    ("dspex.optimizers", "BootstrapError"),
    ("dspex.optimizers.random_search", "SearchError"),
    ("dspex.optimizers.bootstrap", "BootstrapError"),
    ("dspex.optimizers.mipro", "SearchFailedError"),
    ("dspex.optimizers.scoring", "TrialFailedError"),
    ("dspex.adapters.values", "ValueParseError"),
    ("dspex.cli.common", "CliError"),
    ("dspex.dashboard.server", "DashboardError"),
]


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(dspex.errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == "dspex.errors"
        and value.__name__ == name  # an alias (SearchFailedError) is not a second class
    }


def test_every_exception_in_errors_is_a_dspex_error() -> None:
    classes = _error_classes()
    assert len(classes) > 40
    assert [name for name, cls in classes.items() if not issubclass(cls, DspexError)] == []


def _exception_names_defined_in(tree: ast.Module, known: set[str]) -> list[str]:
    """Classes in ``tree`` that derive from an exception, following in-file subclasses."""
    found: list[str] = []
    known = set(known)
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or node.name in found:
                continue
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            if any(base in known for base in bases):
                found.append(node.name)
                known.add(node.name)
                changed = True
    return found


def test_no_other_module_defines_a_public_exception() -> None:
    builtin_exceptions = {
        name
        for name, value in vars(builtins).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    known = builtin_exceptions | set(_error_classes())
    offenders: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _exception_names_defined_in(tree, known):
            if not name.startswith("_"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert offenders == [], "define public exceptions in dspex/errors.py"


def test_the_scan_finds_an_exception_defined_elsewhere() -> None:
    # The scan above must be able to fail: a class deriving from an error, directly or
    # through another class of the same file, is found.
    source = (
        "from dspex.errors import LMError\n"
        "class Helper: pass\n"
        "class Mine(LMError): pass\n"
        "class Deeper(Mine): pass\n"
        "class Plain(ValueError): pass\n"
    )
    found = _exception_names_defined_in(ast.parse(source), {"LMError", "ValueError"})
    assert sorted(found) == ["Deeper", "Mine", "Plain"]


def _drawn_tree() -> dict[str, tuple[str | None, list[str]]]:
    """Each class drawn in the docstring -> (its drawn parent, the extra bases after '+')."""
    doc = dspex.errors.__doc__ or ""
    block = doc.split("::", 1)[1]
    lines = [line for line in block.splitlines() if re.search(r"[A-Za-z]", line)]
    drawn: dict[str, tuple[str | None, list[str]]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) of the open ancestors
    for line in lines:
        match = re.search(r"[A-Z]\w+", line)
        if match is None or not line.strip():
            continue
        if not line.lstrip().startswith(("DspexError", "├", "└", "│")):
            break  # the paragraph after the tree
        column, name = match.start(), match.group(0)
        while stack and stack[-1][0] >= column:
            stack.pop()
        extras_text = line[match.end() :].split("+", 1)[1] if "+" in line else ""
        extras = re.findall(r"[A-Z]\w+", extras_text)
        drawn[name] = (stack[-1][1] if stack else None, extras)
        stack.append((column, name))
    return drawn


def test_the_docstring_tree_draws_every_class_under_its_real_parent() -> None:
    drawn = _drawn_tree()
    classes = _error_classes()
    assert sorted(drawn) == sorted(classes)
    for name, (parent, extras) in drawn.items():
        cls = classes[name]
        bases = [base.__name__ for base in cls.__bases__]
        if name == "DspexError":
            assert parent is None
            continue
        assert bases[0] == parent, f"{name} is drawn under {parent}, its first base is {bases[0]}"
        assert bases[1:] == extras, f"{name}: drawn extra bases {extras}, real {bases[1:]}"


@pytest.mark.parametrize(("module", "name"), OLD_PATHS)
def test_old_import_paths_give_the_same_class(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(dspex.errors, name)


def test_search_error_and_search_failed_error_are_one_class() -> None:
    from dspex.optimizers import SearchError
    from dspex.optimizers.mipro import SearchFailedError

    assert SearchFailedError is SearchError
    assert issubclass(SearchError, dspex.errors.OptimizationError)


def test_runtime_failures_share_one_base_and_setup_mistakes_are_configuration_errors() -> None:
    e = dspex.errors
    for cls in (e.ReplicaDiedError, e.ServiceUnavailableError, e.WorkerLostError,
                e.CoordinatorUnavailableError, e.ChildStartError):
        assert issubclass(cls, e.DspexRuntimeError), cls
    for cls in (e.ClusterUnreachableError, e.RuntimeNotRunningError, e.InvalidChildSpecError,
                e.UnknownSettingError, e.DashboardError, e.SavedFileError):
        assert issubclass(cls, e.ConfigurationError), cls
    assert issubclass(e.RemoteExampleError, e.RemoteProgramError)
    assert issubclass(e.CircuitOpenError, e.LMError)


@pytest.mark.parametrize(
    "error",
    [
        dspex.errors.TrialFailedError("ValueError", "bad metric"),
        dspex.errors.BootstrapError("too many failures", failures=[(3, "boom")]),
        dspex.errors.RemoteExampleError("KeyError", "'x'", "Traceback ..."),
        dspex.errors.ReplicaDiedError("svc", "r1", 2, "killed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_survive_pickling(error: BaseException) -> None:
    # Errors cross Ray processes pickled; the copy must say and hold the same.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
