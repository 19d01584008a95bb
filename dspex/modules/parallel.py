"""`Parallel`: run (module, example) pairs concurrently, results in order (DSPy's API).

``Parallel(num_threads=8)([(qa, {"question": q}) for q in questions])`` returns one
result per pair. Calls run as asyncio tasks (a plain function in a worker thread), at
most ``num_threads`` at a time; a failed call gives None, and the ``max_errors``-th
failure cancels the rest with `ParallelExecutionError`. With
``return_failed_examples=True`` the call returns ``(results, failed_examples,
exceptions)``.
"""

from __future__ import annotations

from typing import Any

from dspex.primitives.parallel import ParallelOutcome, call_for, run_parallel
from dspex.utils.aio import run_sync


class Parallel:
    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
    ) -> None:
        # timeout/straggler_limit re-submit slow threads in DSPy; asyncio tasks need no
        # re-submission (a slow call is bounded by the LM's own timeout): accepted, unused.
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar
        self.timeout = timeout
        self.straggler_limit = straggler_limit
        self.failed_examples: list[Any] = []
        self.exceptions: list[BaseException] = []

    async def acall(self, exec_pairs: list[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        calls = [call_for(module, example, access_examples=self.access_examples) for module, example in exec_pairs]
        outcome = await run_parallel(
            calls,
            num_threads=num_threads if num_threads is not None else self.num_threads,
            max_errors=self.max_errors,
            provide_traceback=self.provide_traceback,
        )
        return self._shape(outcome, [example for _, example in exec_pairs])

    def __call__(self, exec_pairs: list[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        return run_sync(self.acall(exec_pairs, num_threads))

    forward = __call__

    def _shape(self, outcome: ParallelOutcome, examples: list[Any]) -> Any:
        if not self.return_failed_examples:
            return outcome.results
        self.failed_examples = [examples[i] for i in outcome.failed]
        self.exceptions = [outcome.exceptions[i] for i in outcome.failed]
        return outcome.results, self.failed_examples, self.exceptions


__all__ = ["Parallel"]
