"""Fixtures for the sandbox tests: a real Deno + Pyodide, installed once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _sandbox import installed_test_sandbox

from dspex.sandbox import PythonInterpreter


@pytest.fixture(scope="session")
def sandbox_dir() -> Iterator[Path]:
    with installed_test_sandbox() as path:
        yield path


@pytest.fixture(scope="module")
def shared_interpreter(sandbox_dir: Path) -> Iterator[PythonInterpreter]:
    """One interpreter for the tests that need no special configuration (a process start
    costs seconds); tests reset what they change."""
    interpreter = PythonInterpreter(timeout=20)
    try:
        yield interpreter
    finally:
        interpreter.shutdown()
