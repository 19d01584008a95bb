"""Dead letters: inputs that failed every retry, kept with the reason.

OTP's poison-message handling: rather than crash-looping on an input that can
never succeed, the caller gives up on it and leaves it here for a person (or a
later replay) to look at. ``DeadLetterQueue`` is a plain class; run it as a Ray
actor to share one queue across a cluster.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

TRACEBACK_LINES = 12  # enough to locate the failure without storing whole stacks


@dataclass(frozen=True)
class DeadLetter:
    source: str
    input: Any
    error_type: str
    error_message: str
    traceback: str
    attempts: int
    first_failed_at: float
    last_failed_at: float
    # names the entry to whoever got the failure (an HTTP 503 body carries it)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @classmethod
    def from_exception(
        cls,
        source: str,
        input: Any,
        error: BaseException,
        *,
        attempts: int = 1,
        first_failed_at: float | None = None,
    ) -> DeadLetter:
        now = time.time()
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        summary = "".join(lines).splitlines()[-TRACEBACK_LINES:]
        return cls(
            source=source,
            input=input,
            error_type=f"{type(error).__module__}.{type(error).__qualname__}",
            error_message=str(error),
            traceback="\n".join(summary),
            attempts=attempts,
            first_failed_at=now if first_failed_at is None else first_failed_at,
            last_failed_at=now,
        )


class DeadLetterQueue:
    """Bounded queue of dead letters, oldest dropped first (and counted)."""

    def __init__(self, capacity: int = 10_000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self._entries: deque[DeadLetter] = deque(maxlen=capacity)
        self.dropped = 0

    def put(self, entry: DeadLetter) -> int:
        """Add ``entry``; returns the number of entries held."""
        if not isinstance(entry, DeadLetter):
            raise TypeError(f"put() takes a DeadLetter, got {type(entry).__name__}")
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(entry)
        return len(self._entries)

    def list(self, limit: int | None = 100) -> list[DeadLetter]:
        """The newest ``limit`` entries (all if ``None``), oldest first."""
        entries = list(self._entries)
        return entries if limit is None else entries[-limit:] if limit > 0 else []

    def count(self) -> int:
        return len(self._entries)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        removed = len(self._entries)
        self._entries.clear()
        return removed
