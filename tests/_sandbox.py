"""The sandbox's cache for tests: Pyodide fetched once (from the npm registry) into a
directory under the system temp dir that every test session reuses."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dspex.sandbox import PythonInterpreter, install

TEST_SANDBOX_DIR = Path(tempfile.gettempdir()) / "dspex-test-sandbox"


@contextmanager
def installed_test_sandbox() -> Iterator[Path]:
    """Pyodide installed in the test cache, with DSPEX_SANDBOX_DIR pointing at it."""
    previous = os.environ.get(install.SANDBOX_DIR_ENV)
    os.environ[install.SANDBOX_DIR_ENV] = str(TEST_SANDBOX_DIR)
    try:
        install.install(TEST_SANDBOX_DIR)
        yield TEST_SANDBOX_DIR
    finally:
        if previous is None:
            os.environ.pop(install.SANDBOX_DIR_ENV, None)
        else:
            os.environ[install.SANDBOX_DIR_ENV] = previous


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds (no sleeping as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; its status line tells.
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


def kill_and_wait(interpreter: PythonInterpreter, pid: int) -> None:
    """SIGKILL a sandbox process and wait until the interpreter sees it dead."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid not in interpreter.pids, what=f"process {pid} to die")
