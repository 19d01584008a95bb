"""Teleprompter: the base of every optimizer.

``optimizer.compile(student, trainset=..., valset=...)`` returns a new, optimized
program and leaves the student untouched. Each compile is a `Run` (see run.py):
it has an id, checkpoints every step to the run store, honours
``max_lm_calls=``/``max_cost=`` budgets, and resumes from its last checkpoint
when called again with the same ``run_id``.

Subclasses implement ``async def _compile(self, run, student, *, trainset,
valset, **kwargs) -> Module`` and call ``run.offer(program, score)`` for every
scored candidate, so a budget stop can return the best program so far.
``_compile`` runs as batch work (`dspex.primitives.workload`): its LM requests
wait for a provider whose circuit breaker is open to answer a probe, instead
of failing.

While ``dspex.init()`` is in effect (or with ``coordinator=True``) ``compile``
runs in the compile backend the runtime registered (`dspex.optimizers.backends`):
an `OptimizationCoordinator` actor under the ``dspex.optimizers`` supervisor,
which resumes the run if it dies; the caller waits for the program (see
dspex.runtime.coordinator and dspex.runtime.runs). ``coordinator=False`` keeps
it in-process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from dspex.errors import BudgetExceededError, ConfigurationError
from dspex.optimizers.backends import compile_backend
from dspex.optimizers.run import Evaluator, Run, RunInfo
from dspex.optimizers.run_store import RunStore
from dspex.primitives.workload import batch_work
from dspex.utils.aio import run_sync

log = logging.getLogger("dspex.optimizers")


class Teleprompter:
    """Base class of optimizers."""

    #: evaluator used by runs of this optimizer (a coordinator installs the Ray one)
    evaluator: Evaluator | None = None

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
        run_id: str | None = None,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        store: RunStore | None = None,
        coordinator: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return run_sync(
            self.acompile(
                student,
                trainset=trainset,
                valset=valset,
                run_id=run_id,
                max_lm_calls=max_lm_calls,
                max_cost=max_cost,
                store=store,
                coordinator=coordinator,
                **kwargs,
            )
        )

    async def acompile(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
        run_id: str | None = None,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        store: RunStore | None = None,
        coordinator: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        _check_dataset("trainset", trainset)
        if valset is not None:
            _check_dataset("valset", valset)
        if max_cost is not None:
            _check_cost_bounded(student)
        backend = compile_backend(coordinator)
        if backend is not None:
            return await backend(
                self,
                student,
                trainset=trainset,
                valset=valset,
                run_id=run_id,
                max_lm_calls=max_lm_calls,
                max_cost=max_cost,
                store=store,
                **kwargs,
            )
        run = Run.open(
            type(self).__name__,
            run_id=run_id,
            store=store,
            config=self.config(),
            max_lm_calls=max_lm_calls,
            max_cost=max_cost,
            evaluator=self.evaluator,
        )
        try:
            # Batch work: LM requests wait for a recovering provider instead of failing.
            with batch_work():
                program = await self._compile(
                    run, student, trainset=list(trainset), valset=valset, **kwargs
                )
            info = run.finish("finished", program=program)
        except BudgetExceededError as exc:
            log.warning("run %s stopped at its budget: %s", run.run_id, exc)
            program = run.best.program if run.best.program is not None else student.deepcopy()
            program = program.deepcopy()
            info = run.finish("budget_limited", program=program)
        except BaseException as exc:
            # A cancelled or interrupted compile can be resumed; say so rather than "failed".
            interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            run.finish("cancelled" if interrupted else "failed", exc)
            raise
        program.run_info = info
        return program

    async def _compile(
        self, run: Run, student: Any, *, trainset: list[Any], valset: Sequence[Any] | None, **kwargs: Any
    ) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement _compile()")

    def config(self) -> dict[str, Any]:
        """The optimizer's settings as plain values, stored with the run."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def get_params(self) -> dict[str, Any]:
        return self.config()


def _check_cost_bounded(student: Any) -> None:
    """Refuse a ``max_cost=`` run up front when a request's worst case is unknown (no
    price or no max_tokens): the LM would refuse each request, one example at a time."""
    from dspex.primitives.settings import settings

    lms = [settings.lm]
    predictors = getattr(student, "predictors", None)
    if callable(predictors):
        lms += [getattr(predictor, "lm", None) for predictor in predictors()]
    for lm in lms:
        require = getattr(lm, "require_cost_bound", None)
        if callable(require):
            require()


def _check_dataset(name: str, data: Any) -> None:
    if data is None or isinstance(data, str | bytes) or not hasattr(data, "__len__"):
        raise ConfigurationError(f"{name} must be a list of dspex.Example, got {type(data).__name__}")
    if len(data) == 0:
        raise ConfigurationError(f"{name} is empty; an optimizer needs examples to learn from")
    for index, example in enumerate(data):
        if not hasattr(example, "inputs"):
            raise ConfigurationError(
                f"{name}[{index}] is a {type(example).__name__}, not a dspex.Example; "
                "build examples with dspex.Example(...).with_inputs(...)"
            )


__all__ = ["Run", "RunInfo", "Teleprompter"]
