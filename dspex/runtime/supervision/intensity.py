"""Restart intensity: OTP's ``add_restart`` with an injectable clock.

A supervisor may restart children at most ``max_restarts`` times within any
``max_seconds`` window. Each restart is stamped; stamps older than
``now - max_seconds`` are dropped; if the count including the new restart is
greater than ``max_restarts``, the supervisor gives up and exits.

OTP stamps whole seconds (``monotonic_time(1)``); this keeps the clock's full
resolution so sub-second windows behave exactly. Stamps equal to the window's
edge still count, as OTP's ``>=`` test does.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from dspex.errors import InvalidChildSpecError

Clock = Callable[[], float]


class RestartIntensity:
    def __init__(
        self, max_restarts: int = 3, max_seconds: float = 5.0, *, clock: Clock = time.monotonic
    ) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise InvalidChildSpecError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        if not isinstance(max_seconds, (int, float)) or not max_seconds > 0 or math.isinf(max_seconds):
            raise InvalidChildSpecError(f"max_seconds must be a finite number > 0, got {max_seconds!r}")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._stamps: deque[float] = deque()

    def add_restart(self) -> bool:
        """Record a restart now. True if it is allowed, False if the limit is exceeded."""
        now = self._clock()
        self._drop_older_than(now - self.max_seconds)
        self._stamps.append(now)
        return len(self._stamps) <= self.max_restarts

    def recent(self) -> int:
        """Restarts inside the current window."""
        self._drop_older_than(self._clock() - self.max_seconds)
        return len(self._stamps)

    def _drop_older_than(self, threshold: float) -> None:
        while self._stamps and self._stamps[0] < threshold:
            self._stamps.popleft()
