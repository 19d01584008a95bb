"""Run many module calls at once, in order, counting failures: what `dspex.Parallel` and
`Module.batch` do.

DSPy runs each call in a thread of a pool; here each call is an asyncio task (a module's
``acall``; a plain function runs in a worker thread), at most ``num_threads`` at a time.
A failed call leaves None in its place; once ``max_errors`` calls have failed the rest
are cancelled and `ParallelExecutionError` says how many failed and why.

`Module.batch` has a seam: while the runtime is up (``dspex.init()`` installs a batch
runner here) a batch fans out to EvalWorkers the way `Evaluate` does; otherwise, and
inside the runtime's own workers, it runs in this process.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError, ParallelExecutionError
from dspex.primitives.example import Example
from dspex.primitives.settings import settings

log = logging.getLogger(__name__)

Call = Callable[[], Awaitable[Any]]

BatchRunner = Callable[..., Awaitable["ParallelOutcome"]]
"""``await runner(module, examples, num_threads=, max_errors=, provide_traceback=)``"""

_batch_runner: BatchRunner | None = None


def set_batch_runner(runner: BatchRunner | None) -> None:
    """Where `Module.batch` runs (None: in this process). The runtime installs one."""
    global _batch_runner
    _batch_runner = runner


def batch_runner() -> BatchRunner | None:
    return _batch_runner


@dataclass
class ParallelOutcome:
    """Results in input order (None where a call failed), with the failures by index."""

    results: list[Any]
    failed: list[int] = field(default_factory=list)
    exceptions: dict[int, BaseException] = field(default_factory=dict)


async def run_parallel(
    calls: Sequence[Call],
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    provide_traceback: bool | None = None,
) -> ParallelOutcome:
    """Run ``calls`` with at most ``num_threads`` in flight (default ``settings.num_threads``).

    The ``max_errors``-th failure (default ``settings.max_errors``; 0 stops at the first)
    cancels what has not finished and raises `ParallelExecutionError`."""
    threads = num_threads if num_threads is not None else settings.num_threads
    if not isinstance(threads, int) or threads < 1:
        raise ConfigurationError(f"num_threads must be an int >= 1, got {threads!r}")
    limit = settings.max_errors if max_errors is None else max_errors
    outcome = ParallelOutcome([None] * len(calls))
    if not calls:
        return outcome
    slots = asyncio.Semaphore(threads)
    stop = asyncio.Event()

    async def one(index: int, call: Call) -> None:
        async with slots:
            if stop.is_set():
                return
            try:
                outcome.results[index] = await call()
            except Exception as exc:
                outcome.failed.append(index)
                outcome.exceptions[index] = exc
                log.warning(
                    "parallel call #%d failed: %s: %s", index, type(exc).__name__, exc,
                    exc_info=bool(provide_traceback),
                )
                if limit is not None and len(outcome.failed) >= max(limit, 1):
                    stop.set()

    tasks = [asyncio.ensure_future(one(i, call)) for i, call in enumerate(calls)]
    waiter = asyncio.ensure_future(stop.wait())
    try:
        everything = asyncio.gather(*tasks)
        await asyncio.wait({everything, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            first = outcome.exceptions[min(outcome.failed)]
            raise ParallelExecutionError(
                f"{len(outcome.failed)} of {len(calls)} parallel calls failed, reaching "
                f"max_errors={limit}; the rest were cancelled. The first: "
                f"{type(first).__name__}: {first}. Raise max_errors= if some failures are "
                "expected (failed calls then give None)",
                failed=sorted(outcome.failed),
            ) from first
        await everything
    finally:
        waiter.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
    outcome.failed.sort()
    return outcome


def call_for(module: Any, example: Any, *, access_examples: bool = True) -> Call:
    """How one ``(module, example)`` pair runs, as DSPy unpacks it: an Example's inputs
    (or the Example itself with ``access_examples=False``) or a dict as keywords, a
    tuple as positional arguments, a list for a nested `Parallel`."""
    if isinstance(example, Example):
        if access_examples:
            return _invoke(module, (), dict(example.inputs().items()))
        return _invoke(module, (example,), {})
    if isinstance(example, dict):
        return _invoke(module, (), dict(example))
    if isinstance(example, list) and type(module).__name__ == "Parallel":
        return _invoke(module, (example,), {})
    if isinstance(example, tuple):
        return _invoke(module, example, {})
    raise ConfigurationError(
        f"cannot call a module with a {type(example).__name__}: give an Example, a dict "
        "(keyword arguments) or a tuple (positional arguments)"
    )


def _invoke(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    async def call() -> Any:
        acall = getattr(module, "acall", None)
        if callable(acall):
            return await acall(*args, **kwargs)
        if asyncio.iscoroutinefunction(module):
            return await module(*args, **kwargs)
        # A plain callable: in a worker thread, with this task's settings.
        context = contextvars.copy_context()
        return await asyncio.to_thread(context.run, lambda: module(*args, **kwargs))

    return call


__all__ = ["BatchRunner", "ParallelOutcome", "batch_runner", "call_for", "run_parallel", "set_batch_runner"]
