"""A `dspex.PythonInterpreter` made on the driver, used inside Ray workers: it travels as
configuration (tools included), starts its sandbox in the worker, and replaces a sandbox
process killed there.

Uses the session's ``ray_cluster`` (tests/conftest.py); Pyodide comes from the test cache.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from _sandbox import installed_test_sandbox

from dspex.sandbox import PythonInterpreter

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def sandbox_env() -> Iterator[dict[str, Any]]:
    with installed_test_sandbox() as path:
        yield {"env_vars": {"DSPEX_SANDBOX_DIR": str(path), "RAY_USAGE_STATS_ENABLED": "0"}}


class CodeRunner:
    """An actor holding the driver's interpreter."""

    def __init__(self, interpreter: PythonInterpreter) -> None:
        self.interpreter = interpreter

    def run(self, code: str) -> tuple[Any, int, int]:
        result = self.interpreter.run(code)
        return result.value, result.pid, os.getpid()

    def kill_sandbox(self) -> int:
        """SIGKILL the sandbox process, and wait until this interpreter sees it dead."""
        (pid,) = self.interpreter.pids
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid in self.interpreter.pids:
            assert time.monotonic() < deadline, "the killed sandbox still looks alive"
            time.sleep(0.01)
        return pid

    def shutdown(self) -> list[int]:
        self.interpreter.shutdown()
        return self.interpreter.pids


def test_an_interpreter_from_the_driver_runs_in_a_worker_and_survives_a_kill(
    ray_cluster: Any, sandbox_env: dict[str, Any]
) -> None:
    interpreter = PythonInterpreter(tools={"triple": lambda x: 3 * x}, timeout=30)
    runner = ray.remote(num_cpus=1, runtime_env=sandbox_env)(CodeRunner).remote(interpreter)
    try:
        value, sandbox_pid, worker_pid = ray.get(runner.run.remote("triple(14)"), timeout=120)
        assert value == 42 and worker_pid != os.getpid()
        assert interpreter.pids == []  # the driver's copy never started anything
        assert ray.get(runner.run.remote("state = 'kept'\nstate"), timeout=60)[1] == sandbox_pid

        assert ray.get(runner.kill_sandbox.remote(), timeout=30) == sandbox_pid
        value, new_pid, _ = ray.get(runner.run.remote("triple(2)"), timeout=120)
        assert value == 6 and new_pid != sandbox_pid
        assert ray.get(runner.shutdown.remote(), timeout=30) == []
    finally:
        ray.kill(runner)


def test_a_task_runs_code_with_a_shipped_interpreter(ray_cluster: Any, sandbox_env: dict[str, Any]) -> None:
    @ray.remote(num_cpus=1, runtime_env=sandbox_env)
    def run_once(interpreter: PythonInterpreter, code: str) -> Any:
        with interpreter:
            return interpreter.execute(code), Path(os.environ["DSPEX_SANDBOX_DIR"]).name

    value, cache = ray.get(run_once.remote(PythonInterpreter(), "sum(range(10))"), timeout=120)
    assert value == 45 and cache == "dspex-test-sandbox"
