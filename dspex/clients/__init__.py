"""LM clients: the `LM` class, its cache, retries, usage tracking and history.

Importing this package does not import aiohttp; the HTTP transport is loaded on
the first request.
"""

from dspex.clients.cache import LMCache, configure_cache, get_cache
from dspex.clients.history import GLOBAL_HISTORY, inspect_history
from dspex.clients.lm import LM, request_hooks
from dspex.clients.retry import RetryPolicy
from dspex.clients.types import LMResponse, Message, Usage
from dspex.clients.usage import UsageTracker, track_usage

__all__ = [
    "GLOBAL_HISTORY",
    "LM",
    "LMCache",
    "LMResponse",
    "Message",
    "RetryPolicy",
    "Usage",
    "UsageTracker",
    "configure_cache",
    "get_cache",
    "inspect_history",
    "request_hooks",
    "track_usage",
]
