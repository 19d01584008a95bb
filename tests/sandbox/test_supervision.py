"""The sandbox pool's supervision policy (pure, with a fake clock), and the pool carrying
it out on stand-in processes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dspex.errors import (
    InterpreterCrashedError,
    InterpreterTimeoutError,
    InterpreterUnavailableError,
)
from dspex.sandbox.pool import ProcessPool
from dspex.sandbox.supervision import Checkout, PoolSupervision


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slots_fill_lazily_and_an_idle_process_is_reused_first() -> None:
    policy = PoolSupervision(2, clock=FakeClock())
    assert policy.checkout() == Checkout("start", 0)
    policy.started(0)
    policy.release(0, "ok")
    assert policy.checkout() == Checkout("use", 0)  # not a second process
    assert policy.checkout() == Checkout("start", 1)  # slot 0 is busy
    policy.started(1)
    assert policy.checkout() == Checkout("wait")
    policy.release(1, "ok")
    assert policy.checkout() == Checkout("use", 1)


def test_a_timeout_empties_the_slot_without_counting_a_restart() -> None:
    policy = PoolSupervision(1, max_restarts=0, clock=FakeClock())
    policy.checkout()
    policy.started(0)
    policy.release(0, "timeout")
    assert policy.slots == ["empty"] and policy.recent_restarts() == 0
    assert policy.checkout() == Checkout("start", 0)


def test_crashes_beyond_the_intensity_give_up_and_old_ones_expire() -> None:
    clock = FakeClock()
    policy = PoolSupervision(1, max_restarts=2, max_seconds=10, clock=clock)

    def crash_once() -> None:
        decision = policy.checkout()
        assert decision.action in ("start", "use")
        if decision.action == "start":
            policy.started(0)
        policy.release(0, "crashed", "killed by signal 9")

    crash_once()
    clock.now = 5
    crash_once()
    clock.now = 10.0  # the first crash, at 0, is exactly at the window's edge: it counts
    assert policy.recent_restarts() == 2
    clock.now = 10.5  # now it has expired
    assert policy.recent_restarts() == 1
    crash_once()
    assert policy.gave_up is None
    clock.now = 11
    crash_once()  # 5, 10.5, 11: three within 10 s
    assert policy.gave_up is not None and "3 sandbox restarts within 10s" in policy.gave_up
    assert "killed by signal 9" in policy.gave_up
    assert policy.checkout() == Checkout("fail", reason=policy.gave_up)


def test_start_failures_and_dead_idle_processes_count_as_restarts() -> None:
    policy = PoolSupervision(1, max_restarts=1, clock=FakeClock())
    policy.checkout()
    policy.start_failed(0, "no deno")
    assert policy.slots == ["empty"] and policy.gave_up is None
    policy.checkout()
    policy.started(0)
    policy.release(0, "ok")
    policy.checkout()
    policy.found_dead(0, "killed by signal 9")
    assert policy.gave_up is not None and "an idle sandbox process died" in policy.gave_up


def test_shutdown_fails_every_later_checkout_and_ignores_late_reports() -> None:
    policy = PoolSupervision(1, clock=FakeClock())
    policy.checkout()
    policy.started(0)
    policy.shutdown()
    policy.release(0, "crashed", "closed by shutdown")  # the execution that was running
    assert policy.restarts_total == 0
    assert policy.checkout().action == "fail"


def test_events_out_of_order_are_refused() -> None:
    policy = PoolSupervision(1, clock=FakeClock())
    with pytest.raises(RuntimeError, match="expected busy"):
        policy.release(0, "ok")
    with pytest.raises(ValueError):
        PoolSupervision(0)


# --- the pool on stand-in processes ---------------------------------------------------------


class StandInProcess:
    """Behaves like a SandboxProcess whose guest answers from a script."""

    count = 0

    def __init__(self, answers: list[Any]) -> None:
        StandInProcess.count += 1
        self.pid = 1000 + StandInProcess.count
        self.alive = True
        self.answers = answers
        self.killed = False

    def execute(self, request: dict[str, Any], tool_handler: Any, timeout: float) -> dict[str, Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            if isinstance(answer, InterpreterCrashedError):
                self.alive = False
            raise answer
        return answer

    def describe_exit(self) -> str:
        return "killed by signal 9"

    def kill(self) -> None:
        self.killed = True
        self.alive = False

    def close(self) -> None:
        self.kill()


def test_the_pool_replaces_failed_processes_and_gives_up_when_told() -> None:
    answers: list[Any] = [
        {"kind": "ok"},
        InterpreterTimeoutError(1.0),
        {"kind": "ok"},
        InterpreterCrashedError("killed by signal 9"),
        InterpreterCrashedError("killed by signal 9"),
    ]
    started: list[StandInProcess] = []

    def factory() -> Any:
        process = StandInProcess(answers)
        started.append(process)
        return process

    pool = ProcessPool(factory, 1, max_restarts=1, max_seconds=60, clock=FakeClock())
    assert pool.run({}, lambda n, p: {}, 1.0) == ({"kind": "ok"}, started[0].pid)
    with pytest.raises(InterpreterTimeoutError):
        pool.run({}, lambda n, p: {}, 1.0)
    assert started[0].killed and len(started) == 1
    assert pool.run({}, lambda n, p: {}, 1.0)[1] == started[1].pid  # a new process
    with pytest.raises(InterpreterCrashedError):
        pool.run({}, lambda n, p: {}, 1.0)
    with pytest.raises(InterpreterCrashedError):
        pool.run({}, lambda n, p: {}, 1.0)  # the second crash within the window...
    with pytest.raises(InterpreterUnavailableError, match="gave up"):
        pool.run({}, lambda n, p: {}, 1.0)  # ...made the pool give up
    assert len(started) == 3


def test_executions_beyond_the_pool_wait_for_a_free_process() -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)

    class Blocking(StandInProcess):
        def execute(self, request: dict[str, Any], tool_handler: Any, timeout: float) -> dict[str, Any]:
            entered.release()
            assert gate.wait(10)
            return {"kind": "ok", "pid": self.pid}

    pool = ProcessPool(lambda: Blocking([]), 1, max_restarts=1, max_seconds=60, clock=FakeClock())
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(pool.run({}, lambda n, p: {}, 1.0))) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert entered.acquire(timeout=10)
    assert not entered.acquire(timeout=0.2)  # only one runs: the others wait for its process
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 3 and len({pid for _, pid in results}) == 1
    pool.shutdown()
