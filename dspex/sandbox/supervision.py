"""The sandbox pool's supervision policy, as pure logic (no processes, no sleeping).

A pool has ``size`` slots; each holds at most one sandbox process. `PoolSupervision`
answers what to do next (`checkout`) and records what happened (`started`,
`start_failed`, `release`, `found_dead`); `dspex.sandbox.pool.ProcessPool` carries the
answers out on real processes. The policy:

- slots start empty and are filled lazily, lowest first; an idle process is reused
  before an empty slot is filled, so consecutive executions meet the same process
  (and the globals it holds);
- a process that crashed (died while running, found dead while idle, or failed to
  start) empties its slot and counts as a restart; the next checkout starts a new one;
- a process killed for running past its timeout empties its slot without counting: the
  kill was the pool's own decision about the code, not a fault of the sandbox;
- restart intensity, as OTP's supervisors: more than ``max_restarts`` restarts within
  ``max_seconds`` and the pool gives up; every later checkout fails with the reason;
- `shutdown` gives up for good.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Clock = Callable[[], float]
SlotStatus = Literal["empty", "starting", "idle", "busy"]
ReleaseOutcome = Literal["ok", "timeout", "crashed"]


@dataclass(frozen=True)
class Checkout:
    """What the pool must do to serve one execution.

    ``use``: run it on the idle process in ``slot`` (now busy); ``start``: start a
    process in ``slot`` (now starting), then run on it; ``wait``: every slot is busy or
    starting, wait for a release; ``fail``: the pool gave up, ``reason`` says why.
    """

    action: Literal["use", "start", "wait", "fail"]
    slot: int = -1
    reason: str = ""


class PoolSupervision:
    def __init__(
        self,
        size: int,
        max_restarts: int = 5,
        max_seconds: float = 60.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"a sandbox pool needs at least one process, got pool_size={size}")
        if max_restarts < 0 or max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        self.slots: list[SlotStatus] = ["empty"] * size
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.restarts_total = 0
        self.gave_up: str | None = None
        self._clock = clock
        self._restart_stamps: deque[float] = deque()

    # --- decisions ---------------------------------------------------------------------

    def checkout(self) -> Checkout:
        if self.gave_up is not None:
            return Checkout("fail", reason=self.gave_up)
        for index, status in enumerate(self.slots):
            if status == "idle":
                self.slots[index] = "busy"
                return Checkout("use", index)
        for index, status in enumerate(self.slots):
            if status == "empty":
                self.slots[index] = "starting"
                return Checkout("start", index)
        return Checkout("wait")

    # --- what happened -------------------------------------------------------------------

    def started(self, slot: int) -> None:
        """The process in ``slot`` is ready; the execution that started it now runs on it."""
        if not self._expect(slot, "starting"):
            return
        self.slots[slot] = "busy"

    def start_failed(self, slot: int, reason: str) -> None:
        if not self._expect(slot, "starting"):
            return
        self.slots[slot] = "empty"
        self._count_restart(f"a sandbox process failed to start: {reason}")

    def release(self, slot: int, outcome: ReleaseOutcome, reason: str = "") -> None:
        if not self._expect(slot, "busy"):
            return
        if outcome == "ok":
            self.slots[slot] = "idle"
            return
        self.slots[slot] = "empty"
        if outcome == "crashed":
            self._count_restart(f"a sandbox process died while running code: {reason}")

    def found_dead(self, slot: int, reason: str) -> None:
        """The process checked out for ``slot`` had died while idle (killed from outside)."""
        if not self._expect(slot, "busy"):
            return
        self.slots[slot] = "empty"
        self._count_restart(f"an idle sandbox process died: {reason}")

    def shutdown(self) -> None:
        self.gave_up = "the interpreter was shut down (its session has ended); create a new PythonInterpreter"
        self.slots = ["empty"] * len(self.slots)

    # --- restart intensity ------------------------------------------------------------------

    def recent_restarts(self) -> int:
        self._drop_old(self._clock())
        return len(self._restart_stamps)

    def _count_restart(self, reason: str) -> None:
        now = self._clock()
        self._drop_old(now)
        self._restart_stamps.append(now)
        self.restarts_total += 1
        if len(self._restart_stamps) > self.max_restarts and self.gave_up is None:
            self.gave_up = (
                f"gave up after {len(self._restart_stamps)} sandbox restarts within "
                f"{self.max_seconds:g}s (max_restarts={self.max_restarts}); the last: {reason}"
            )

    def _drop_old(self, now: float) -> None:
        # A stamp exactly at the window's edge still counts (as OTP's).
        while self._restart_stamps and self._restart_stamps[0] < now - self.max_seconds:
            self._restart_stamps.popleft()

    def _expect(self, slot: int, status: SlotStatus) -> bool:
        """Whether to record an event for ``slot`` (not when shut down while it ran)."""
        if self.gave_up is not None and self.slots[slot] == "empty":
            return False
        if self.slots[slot] != status:
            raise RuntimeError(f"slot {slot} is {self.slots[slot]}, expected {status}")
        return True
