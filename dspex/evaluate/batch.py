"""`Module.batch` through an evaluation runner: how a batch fans out to EvalWorkers.

The runtime installs `run_batch` as the batch runner (`dspex.primitives.parallel`):
the examples go to the default evaluation runner (EvalWorkers while the runtime is up)
with a metric that scores nothing, and the predictions come back in order. Failures are
kept by index (their type and message, as they cross processes), and the LM usage the
workers spent counts here as if the batch had run in this process.
"""

from __future__ import annotations

from typing import Any

from dspex.errors import EvaluationError, ParallelExecutionError, RemoteExampleError
from dspex.evaluate import runners
from dspex.evaluate.runner import RunOptions
from dspex.primitives.parallel import ParallelOutcome
from dspex.primitives.settings import settings


def _unscored(example: Any, prediction: Any, trace: Any = None) -> float:
    return 0.0


async def run_batch(
    module: Any,
    examples: list[Any],
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    provide_traceback: bool | None = None,
) -> ParallelOutcome:
    runner = runners.default_runner()
    limit = settings.max_errors if max_errors is None else max_errors
    options = RunOptions(
        num_threads=num_threads or settings.num_threads,
        # A runner stops after more than max_errors failures; a batch at the max_errors-th.
        max_errors=None if limit is None else max(limit, 1) - 1,
        provide_traceback=bool(provide_traceback),
    )
    try:
        outcome = await runner.run(module, _unscored, examples, options, None)
    except EvaluationError as exc:
        failed = sorted(record.index for record in exc.records)
        raise ParallelExecutionError(
            f"{len(failed) or 'too many'} batch calls failed, reaching max_errors={limit}; the "
            f"rest were cancelled. {exc}",
            failed=failed,
        ) from exc
    _count_remote_usage(runner, outcome)
    failures = {failure.index: failure for failure in outcome.failures}
    return ParallelOutcome(
        [None if index in failures else prediction for index, (_, prediction, _) in enumerate(outcome.results)],
        sorted(failures),
        {
            index: RemoteExampleError(failure.error_type, failure.message, failure.traceback or "")
            for index, failure in failures.items()
        },
    )


def _count_remote_usage(runner: runners.Runner, outcome: Any) -> None:
    """Usage spent in other processes counts here (trackers, the run budget) once."""
    usage = outcome.usage
    if not runner.remote or usage is None or not usage.calls:
        return
    from dspex.clients.budget import CallBudget, active_budget
    from dspex.clients.usage import record_usage

    budget = active_budget()
    if isinstance(budget, CallBudget) and not outcome.budget_charged:
        budget.charge(usage)
    record_usage(getattr(settings.lm, "model", None) or "unknown", usage)


__all__ = ["run_batch"]
