"""Whether the code running now is batch work or serves an interactive request.

The two want opposite things from an LM provider that is failing. Batch work
(an evaluation, an optimizer's compile) would rather wait for a recovering
provider than lose an example: a lost example skews a score. An interactive
request (a served program answering a user) would rather fail fast: a fallback
or an error now beats a reply minutes later.

    with batch_work():            # Evaluate and optimizers do this themselves
        await program.acall(...)  # LM requests wait for an open circuit's probe

    with interactive_work():      # dspex.serve's replicas do this
        await program.acall(...)  # LM requests fail fast with CircuitOpenError

The mode lives in a `contextvars.ContextVar`, so it follows a request into
the asyncio tasks and threads it starts (and through `run_sync`). The LM
client reads it on every request it routes to a provider pool and marks the
request (``PoolRequest.wait_for_circuit``); the pool decides how long it may
wait. Outside both blocks, requests fail fast (interactive), as they always did.

Interactive wins when the two nest: a served program that evaluates or batches
inside a request still answers that request, so it still fails fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

Workload = Literal["batch", "interactive"]

_workload: ContextVar[Workload | None] = ContextVar("dspex_workload", default=None)


def current_workload() -> Workload:
    """``"batch"`` inside `batch_work`, else ``"interactive"`` (the default)."""
    return _workload.get() or "interactive"


@contextmanager
def batch_work() -> Iterator[None]:
    """Mark the code inside as batch work (unless an enclosing block made it interactive)."""
    if _workload.get() == "interactive":
        yield
        return
    token = _workload.set("batch")
    try:
        yield
    finally:
        _workload.reset(token)


@contextmanager
def interactive_work() -> Iterator[None]:
    """Mark the code inside as serving an interactive request, whatever encloses it."""
    token = _workload.set("interactive")
    try:
        yield
    finally:
        _workload.reset(token)


__all__ = ["Workload", "batch_work", "current_workload", "interactive_work"]
