"""LM usage tracking for the client layer: `dspex.utils.usage_tracker` re-exported.

The tracker machinery lives in the bottom layer (so DSPy's import path
``dspex.utils.usage_tracker`` works); this module gives it the zero `Usage` its
``total()`` starts from.
"""

from __future__ import annotations

from dspex.clients.types import Usage
from dspex.utils import usage_tracker as _tracking
from dspex.utils.usage_tracker import (
    UsageTracker,
    innermost_tracker,
    merge_usage,
    record_usage,
    track_usage,
    usage_entry,
)

_tracking.zero_usage = Usage

__all__ = [
    "UsageTracker",
    "innermost_tracker",
    "merge_usage",
    "record_usage",
    "track_usage",
    "usage_entry",
]
