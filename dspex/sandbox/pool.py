"""The processes behind one interpreter: `ProcessPool` carries out `PoolSupervision`'s
decisions on real sandbox processes.

It starts processes lazily, hands one out per execution (waiting when all are busy),
kills a process that ran past its timeout, replaces a dead one on next use, and stops
them all at `shutdown`, when the pool is garbage-collected, and at interpreter exit
(a `weakref.finalize`, which also runs at exit): no process outlives its pool.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from dspex.errors import (
    InterpreterCrashedError,
    InterpreterUnavailableError,
)
from dspex.sandbox.process import SandboxProcess, ToolHandler, _RequestNotDelivered
from dspex.sandbox.supervision import Clock, PoolSupervision

ProcessFactory = Callable[[], SandboxProcess]


def _stop_all(processes: list[SandboxProcess | None], owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return  # a forked child: the processes are its parent's to stop
    for index, process in enumerate(processes):
        if process is not None:
            processes[index] = None
            process.kill()


class ProcessPool:
    def __init__(
        self,
        factory: ProcessFactory,
        size: int,
        *,
        max_restarts: int,
        max_seconds: float,
        clock: Clock | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        self.supervision = PoolSupervision(size, max_restarts, max_seconds, **kwargs)
        self._factory = factory
        self._processes: list[SandboxProcess | None] = [None] * size
        self._changed = threading.Condition()
        # Holds the process list, not the pool: the pool can be collected, and then the
        # finalizer (or the one run at exit) kills what is left.
        self._finalizer = weakref.finalize(self, _stop_all, self._processes, os.getpid())

    # --- one execution -------------------------------------------------------------------

    def run(self, request: dict[str, Any], tool_handler: ToolHandler, timeout: float) -> tuple[dict[str, Any], int]:
        """Run one request on a pooled process: (the guest's outcome, the process's PID)."""
        while True:
            slot, process = self._checkout()
            try:
                outcome = process.execute(request, tool_handler, timeout)
                break
            except _RequestNotDelivered as never_ran:
                # Died while idle (killed from outside): count it, run on a new process.
                process.kill()
                with self._changed:
                    if self._processes[slot] is process:
                        self._processes[slot] = None
                    self.supervision.found_dead(slot, str(never_ran))
                    self._changed.notify_all()
                continue
            except BaseException as failure:
                self._after_failure(slot, process, failure)
                raise
        with self._changed:
            self.supervision.release(slot, "ok")
            self._changed.notify()
        return outcome, process.pid

    def _after_failure(self, slot: int, process: SandboxProcess, failure: BaseException) -> None:
        """Record why an execution failed (the caller re-raises) and drop its process."""
        if isinstance(failure, InterpreterCrashedError):
            self._discard(slot, process, "crashed", failure.detail)
        else:
            # A timeout, or the host side failing mid-protocol (a malformed message, an
            # interrupt): the process's state is unknown, so it is killed, not counted.
            self._discard(slot, process, "timeout", "")

    def _checkout(self) -> tuple[int, SandboxProcess]:
        with self._changed:
            while True:
                decision = self.supervision.checkout()
                if decision.action == "fail":
                    raise InterpreterUnavailableError(decision.reason)
                if decision.action == "wait":
                    self._changed.wait()
                    continue
                if decision.action == "use":
                    process = self._processes[decision.slot]
                    if process is not None and process.alive:
                        return decision.slot, process
                    reason = process.describe_exit() if process is not None else "no process"
                    self._processes[decision.slot] = None
                    self.supervision.found_dead(decision.slot, reason)
                    self._changed.notify_all()
                    continue
                slot = decision.slot
                break
        # Starting takes seconds: done outside the lock so other slots keep serving.
        try:
            process = self._factory()
        except BaseException as exc:
            with self._changed:
                self.supervision.start_failed(slot, f"{type(exc).__name__}: {exc}")
                self._changed.notify_all()
            raise
        with self._changed:
            if self.supervision.gave_up is not None and self.supervision.slots[slot] == "empty":
                process.kill()  # shut down while it started
                raise InterpreterUnavailableError(self.supervision.gave_up)
            self._processes[slot] = process
            self.supervision.started(slot)
        return slot, process

    def _discard(self, slot: int, process: SandboxProcess, outcome: str, reason: str) -> None:
        process.kill()
        with self._changed:
            if self._processes[slot] is process:
                self._processes[slot] = None
            self.supervision.release(slot, outcome, reason)  # type: ignore[arg-type]
            self._changed.notify_all()

    # --- the pool as a whole --------------------------------------------------------------

    def warm(self) -> None:
        """Start every slot's process now (instead of on first use)."""
        taken: list[int] = []
        try:
            for _ in self._processes:
                slot, _process = self._checkout()
                taken.append(slot)
        finally:
            with self._changed:
                for slot in taken:
                    self.supervision.release(slot, "ok")
                self._changed.notify_all()

    def pids(self) -> list[int]:
        """The PIDs of the live processes, by slot."""
        with self._changed:
            return [p.pid for p in self._processes if p is not None and p.alive]

    def shutdown(self) -> None:
        with self._changed:
            self.supervision.shutdown()
            processes = [p for p in self._processes if p is not None]
            for index in range(len(self._processes)):
                self._processes[index] = None
            self._changed.notify_all()
        for process in processes:
            process.close()
        self._finalizer.detach()
