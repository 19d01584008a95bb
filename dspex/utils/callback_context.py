"""The id of the callback-observed call running in the current context (DSPy's path).

`ACTIVE_CALL_ID` holds the ``call_id`` of the innermost call whose callbacks are
running (a module, LM, adapter, tool or evaluation call), or None. A start handler
reads its parent's id from it: the id is set only after the start handlers ran.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

ACTIVE_CALL_ID: ContextVar[str | None] = ContextVar("dspex_active_call_id", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def _bind_active_call_id(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run with the call id active now (e.g. in a worker thread that does not share
    this context), restoring the thread's own id afterwards, even if ``fn`` raises."""
    bound_id = ACTIVE_CALL_ID.get()

    @functools.wraps(fn)
    def run_with_bound_id(*args: P.args, **kwargs: P.kwargs) -> R:
        token = ACTIVE_CALL_ID.set(bound_id)
        try:
            return fn(*args, **kwargs)
        finally:
            ACTIVE_CALL_ID.reset(token)

    return run_with_bound_id


__all__ = ["ACTIVE_CALL_ID"]
