"""Usage tracking: sum the tokens and cost of every LM call made inside a block.

    with track_usage() as t:
        program(question="...")
    t.total(), t.by_model()

The active trackers live in a ``contextvars.ContextVar``, so a tracker sees
calls made in tasks started inside the block (``asyncio.gather`` copies the
context into each task) and calls made through dspex's sync wrappers
(``run_sync`` carries the caller's context to the background loop). Trackers
nest: a call is added to every enclosing tracker.

Cache hits cost nothing and are counted separately (``cache_hits()``), not as
calls; this matches DSPy, where cached calls are not counted as usage.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from dspex.clients.types import Usage

_active: ContextVar[tuple[UsageTracker, ...]] = ContextVar("dspex_usage_trackers", default=())


class UsageTracker:
    """Accumulates Usage per model. Safe to update from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, Usage] = {}
        self._cache_hits: dict[str, int] = {}

    def add(self, model: str, usage: Usage, *, cached: bool = False) -> None:
        with self._lock:
            if cached:
                self._cache_hits[model] = self._cache_hits.get(model, 0) + 1
                return
            previous = self._by_model.get(model)
            self._by_model[model] = usage if previous is None else previous + usage

    def by_model(self) -> dict[str, Usage]:
        """Usage per model name (as given to ``LM(model)``)."""
        with self._lock:
            return dict(self._by_model)

    def total(self) -> Usage:
        """Usage summed over all models."""
        total = Usage()
        for usage in self.by_model().values():
            total = total + usage
        return total

    def cache_hits(self) -> dict[str, int]:
        """How many calls per model were answered from the cache (not counted as usage)."""
        with self._lock:
            return dict(self._cache_hits)

    def __repr__(self) -> str:
        return f"UsageTracker(total={self.total()!r})"


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Track the usage of every LM call made inside the ``with`` block."""
    tracker = UsageTracker()
    token = _active.set((*_active.get(), tracker))
    try:
        yield tracker
    finally:
        _active.reset(token)


def record_usage(model: str, usage: Usage, *, cached: bool = False) -> None:
    """Add one call's usage to every tracker active in the current context."""
    trackers = _active.get()
    # The common case (no tracker) must cost next to nothing on the hot path.
    if trackers:
        for tracker in trackers:
            tracker.add(model, usage, cached=cached)
