"""Usage tracking: sum the tokens and cost of every LM call made inside a block.

    with dspex.track_usage() as t:       # also: from dspex.utils.usage_tracker import track_usage
        program(question="...")
    t.get_total_tokens()     # {"openai/gpt-4o-mini": {"prompt_tokens": ..., ...}}
    t.total(), t.by_model()  # the same as dspex `Usage` values (with calls and cost)

The tracker keeps DSPy's record (``usage_data``: model -> list of usage dicts, one
per call; ``add_usage``; ``get_total_tokens`` sums them per model, nested dicts
key by key) next to dspex's running usage per model.

A call is added to every tracker active in its context: the ones opened with
`track_usage` (a ``contextvars.ContextVar``, so tasks started in the block and
calls made through dspex's sync wrappers count too; trackers nest) and the
``usage_tracker`` setting, read through the `configured_tracker` hook that
`dspex.primitives.settings` installs. Inside a `track_usage` block the
``usage_tracker`` setting reads the block's tracker, as in DSPy.

This module sits in the bottom layer (the LM client reports to it) and so knows
the `dspex.clients.types.Usage` values it sums only by their interface (``+``,
``to_dict()``); `dspex.clients.usage` installs the zero `total()` starts from.

Cache hits cost nothing and are counted separately (``cache_hits()``), not as
calls; this matches DSPy, where cached calls are not counted as usage.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.clients.types import Usage

_active: ContextVar[tuple[UsageTracker, ...]] = ContextVar("dspex_usage_trackers", default=())


def _no_zero() -> Any:
    return None


zero_usage: Callable[[], Any] = _no_zero
"""An empty `Usage`, where `UsageTracker.total` starts; set by `dspex.clients.usage`."""

class UsageTracker:
    """Accumulates LM usage per model. Safe to update from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, Usage] = {}
        self._cache_hits: dict[str, int] = {}
        self.usage_data: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        """model -> one usage dict per call, in call order (DSPy's record)."""

    # --- DSPy's API -------------------------------------------------------------

    def add_usage(self, lm: str, usage_entry: Mapping[str, Any]) -> None:
        """Record one call's usage dict for model ``lm`` (an empty dict is ignored).

        Values that are pydantic models (as some providers' SDKs return for the token
        details) are stored as plain dicts.
        """
        if not usage_entry:
            return
        entry = {key: _plain(value) for key, value in usage_entry.items()}
        with self._lock:
            self.usage_data[lm].append(entry)

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        """Per model, the sum of its usage dicts: numbers are added, nested dicts summed key
        by key, a key missing (or None) in one entry counts as nothing there."""
        with self._lock:
            snapshot = {model: list(entries) for model, entries in self.usage_data.items()}
        totals: dict[str, dict[str, Any]] = {}
        for model, entries in snapshot.items():
            total: dict[str, Any] = {}
            for entry in entries:
                total = merge_usage(total, entry)
            totals[model] = total
        return totals

    # --- dspex's API --------------------------------------------------------------

    def add(self, model: str, usage: Usage, *, cached: bool = False) -> None:
        """Record one call (a cache hit counts in `cache_hits` only)."""
        with self._lock:
            if cached:
                self._cache_hits[model] = self._cache_hits.get(model, 0) + 1
                return
            previous = self._by_model.get(model)
            self._by_model[model] = usage if previous is None else previous + usage
            self.usage_data[model].append(usage_entry(usage))

    def by_model(self) -> dict[str, Usage]:
        """Usage per model name (as given to ``LM(model)``) of the calls recorded with `add`."""
        with self._lock:
            return dict(self._by_model)

    def total(self) -> Usage:
        """Usage summed over all models."""
        total = zero_usage()
        for usage in self.by_model().values():
            total = usage if total is None else total + usage
        return total  # type: ignore[no-any-return]

    def cache_hits(self) -> dict[str, int]:
        """How many calls per model were answered from the cache (not counted as usage)."""
        with self._lock:
            return dict(self._cache_hits)

    def __repr__(self) -> str:
        return f"UsageTracker(total={self.total()!r})"


def usage_entry(usage: Usage) -> dict[str, Any]:
    """One call's usage as the dict a tracker records: DSPy's token counts, plus dspex's
    ``calls`` and ``cost`` (None when the model's price is unknown)."""
    return usage.to_dict()


def merge_usage(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> dict[str, Any]:
    """The key-by-key sum of two usage dicts (nested dicts recursively; None counts as 0,
    and a key None in both stays None)."""
    if not first:
        return dict(second or {})
    if not second:
        return dict(first)
    merged = dict(first)
    for key, value in second.items():
        current = merged.get(key)
        if isinstance(current, Mapping) or isinstance(value, Mapping):
            merged[key] = merge_usage(
                current if isinstance(current, Mapping) else None,
                value if isinstance(value, Mapping) else None,
            )
        elif current is not None or value is not None:
            merged[key] = (current or 0) + (value or 0)
        else:
            merged[key] = None  # known, but never reported
    return merged


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # a pydantic model, e.g. an SDK's token details
    return dump() if callable(dump) else value


def innermost_tracker() -> UsageTracker | None:
    """The tracker of the innermost `track_usage` block active here, if any."""
    trackers = _active.get()
    return trackers[-1] if trackers else None


def _no_configured_tracker() -> Any:
    return None


configured_tracker: Callable[[], Any] = _no_configured_tracker
"""Returns the ``usage_tracker`` setting of the calling context; replaced by
`dspex.primitives.settings` (None until then)."""


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
    configured = configured_tracker()
    # The common case (no tracker) must cost next to nothing on the hot path.
    if trackers:
        for tracker in trackers:
            tracker.add(model, usage, cached=cached)
    if configured is not None and not any(t is configured for t in trackers):
        if isinstance(configured, UsageTracker):
            configured.add(model, usage, cached=cached)
        elif not cached:  # a DSPy-style tracker of the user's own: add_usage only
            configured.add_usage(model, usage_entry(usage))


__all__ = [
    "UsageTracker",
    "innermost_tracker",
    "merge_usage",
    "record_usage",
    "track_usage",
    "usage_entry",
]
