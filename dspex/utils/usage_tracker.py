"""DSPy's import path for usage tracking: ``from dspex.utils.usage_tracker import track_usage``.

`track_usage` opens a `UsageTracker` that every LM call inside the block is added to
(see `dspex.clients.usage`), and makes it the ``usage_tracker`` setting for the block,
so code reading ``dspex.settings.usage_tracker`` finds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dspex.clients import usage
from dspex.clients.usage import UsageTracker
from dspex.primitives.settings import settings


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Track the usage of every LM call made inside the ``with`` block::

        with dspex.track_usage() as tracker:
            program(question="...")
        tracker.get_total_tokens()  # {model: {"prompt_tokens": ..., ...}}
    """
    with usage.track_usage() as tracker, settings.context(usage_tracker=tracker):
        yield tracker


__all__ = ["UsageTracker", "track_usage"]
