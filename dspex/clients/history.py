"""A bounded record of LM calls, for inspection while developing a program.

Every successful LM call appends one entry (a plain dict) to the process-wide
``GLOBAL_HISTORY`` (a list of the last 10,000 calls), to the calling LM's own
``lm.history`` and to the ``history`` of every module the call happened in (the
program, its sub-modules, the predictor): the same dict object in each, so the
copies cost nothing. The LM's and the modules' histories keep the last
``max_history_size`` entries (a setting, 10,000 by default; 0 keeps none there).

The client layer does not import settings: `dspex.primitives.settings` replaces
``recording_scope`` with one that reads ``disable_history``, ``max_history_size``
and the calling modules of the current context. Entries never hold the API key or
API base: only the model, the messages, the request params, the outputs, usage
and cost.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from dspex.clients.types import LMResponse, Message

MAX_HISTORY = 10_000
"""How many entries ``GLOBAL_HISTORY`` keeps (the oldest go first)."""

GLOBAL_HISTORY: list[dict[str, Any]] = []
"""The last `MAX_HISTORY` LM calls made in this process, oldest first."""

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class RecordingScope:
    """Where the call being recorded goes, as the caller's settings say."""

    enabled: bool = True
    max_size: int = MAX_HISTORY
    """Bound of the LM's and the modules' histories."""
    modules: tuple[Any, ...] = ()
    """Modules the call happened in (each has a ``history`` list)."""


_DEFAULT_SCOPE = RecordingScope()


def _default_scope() -> RecordingScope:
    return _DEFAULT_SCOPE


recording_scope: Callable[[], RecordingScope] = _default_scope
"""Asked before each entry is recorded; `dspex.primitives.settings` replaces it with one
that reads ``disable_history``, ``max_history_size`` and ``caller_modules``."""


def make_entry(
    *,
    model: str,
    messages: Sequence[Message],
    params: dict[str, Any],
    response: LMResponse,
    latency: float,
) -> dict[str, Any]:
    """One history entry; ``params`` must already be free of secrets."""
    shown_params = dict(params)
    return {
        # A random (version 4) id from `random`, not os.urandom: a syscall per call costs
        # more than the rest of a cached call here, and the id only needs to be unique.
        "uuid": str(uuid.UUID(int=random.getrandbits(128), version=4)),
        "timestamp": time.time(),
        "model": model,
        "response_model": response.model,
        "model_type": "chat",
        # dspex always sends chat messages; DSPy readers look for both keys.
        "prompt": None,
        # Shallow copies: a caller reusing its message list must not rewrite history.
        "messages": list(messages),
        "params": shown_params,
        "kwargs": shown_params,  # DSPy's name for the request params
        "outputs": list(response.outputs),
        "finish_reasons": list(response.finish_reasons),
        "usage": response.usage.to_dict(),
        "cost": response.usage.cost,
        "cached": response.cached,
        "latency": latency,
    }


def append_bounded(history: MutableSequence[Any], entry: Any, max_size: int) -> None:
    """Append ``entry`` and drop the oldest entries beyond ``max_size`` (0: keep none)."""
    if max_size <= 0:
        return
    history.append(entry)
    excess = len(history) - max_size
    if excess > 0:
        del history[:excess]


def record(entry: dict[str, Any], *local: MutableSequence[dict[str, Any]]) -> None:
    """Append ``entry`` to the global history, to each of the given local ones (an LM's)
    and to the calling modules' histories; nothing while history is disabled."""
    scope = recording_scope()
    if not scope.enabled:
        return
    with _lock:
        # Several threads may record at once; the trim must not interleave with an append.
        append_bounded(GLOBAL_HISTORY, entry, MAX_HISTORY)
        for history in local:
            append_bounded(history, entry, scope.max_size)
        for module in scope.modules:
            history = getattr(module, "history", None)
            if isinstance(history, list):
                append_bounded(history, entry, scope.max_size)


def format_entries(entries: Iterable[dict[str, Any]]) -> str:
    """Render entries as readable text (see `dspex.utils.inspect_history`)."""
    from dspex.utils.inspect_history import format_history

    entries = list(entries)
    return format_history(entries, len(entries), colors=False)


def inspect_history(
    n: int = 1,
    *,
    history: Sequence[dict[str, Any]] | None = None,
    file: TextIO | None = None,
) -> None:
    """Print the last ``n`` LM calls of ``history`` (default: the global one) to ``file``
    (plain text) or stdout (coloured on a terminal). `format_entries` gives the text."""
    from dspex.utils.inspect_history import pretty_print_history

    pretty_print_history(list(GLOBAL_HISTORY if history is None else history), n, file=file)
