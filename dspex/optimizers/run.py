"""A run: one `compile`, with durable steps, a budget, trials and the best program so far.

Optimizers express their work as *steps*: ``await run.step(key, fn)`` runs
``fn`` once and stores its (small, picklable) result under ``key``. A resumed
run executes the same optimizer code from the top; steps already stored return
their saved result at once, so with a fixed seed the resumed run takes exactly
the decisions the interrupted one would have. Checkpointing is therefore "after
every step" by construction, and nothing a finished step computed is lost.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dspex.clients.budget import CallBudget, budget_scope
from dspex.clients.types import Usage
from dspex.errors import BudgetExceededError
from dspex.observability.events import emit
from dspex.observability.redact import is_secret_name, without_secrets
from dspex.observability.tracing import record_trial_result
from dspex.optimizers.run_store import RunStore
from dspex.privacy.session import redacted_for_storage

T = TypeVar("T")
log = logging.getLogger("dspex.optimizers")

Evaluator = Callable[..., Awaitable[Any]]
"""``await evaluator(program, devset, metric, num_threads=...) -> EvaluationResult``.

An evaluator may also have ``runs_in_process(devset) -> bool``: True when it would
evaluate ``devset`` in this process (so an optimizer's in-process limits, bound to
this event loop, can wrap the program). Without it, a custom evaluator is taken to
run the program elsewhere."""


@dataclass
class RunInfo:
    """Attached to a compiled program as ``program.run_info``."""

    run_id: str
    optimizer: str
    status: str
    best_score: float | None
    budget_limited: bool
    lm_calls: int
    cost: float
    replayed_steps: int
    elapsed: float


@dataclass
class _Best:
    score: float = float("-inf")
    program: Any = None
    label: str = ""


@dataclass
class Run:
    run_id: str
    optimizer: str
    store: RunStore
    budget: CallBudget
    evaluator: Evaluator | None = None
    replayed_steps: int = 0
    started: float = field(default_factory=time.monotonic)
    best: _Best = field(default_factory=_Best)
    _usage: Usage = field(default_factory=Usage)

    @classmethod
    def open(
        cls,
        optimizer: str,
        *,
        run_id: str | None = None,
        store: RunStore | None = None,
        config: dict[str, Any] | None = None,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        evaluator: Evaluator | None = None,
    ) -> Run:
        """Start a new run, or resume ``run_id`` if the store has it."""
        store = store or RunStore()
        run_id = run_id or f"{optimizer.lower()}-{uuid.uuid4().hex[:10]}"
        resumed = store.has_run(run_id)
        record = store.create_run(run_id, optimizer, _plain(config or {}))
        if resumed and record.optimizer != optimizer:
            from dspex.errors import ConfigurationError

            raise ConfigurationError(
                f"run {run_id!r} was made by {record.optimizer}, not {optimizer}; "
                "resume it with the same optimizer or pick a new run_id"
            )
        spent = store.usage(run_id)
        budget = CallBudget(
            max_calls=max_lm_calls,
            max_cost=max_cost,
            calls=int(sum(u["calls"] for u in spent.values())),
            cost=float(sum(u["cost"] for u in spent.values())),
        )
        run = cls(run_id, optimizer, store, budget, evaluator)
        log.info("run %s %s (%s)", run_id, "resumed" if resumed else "started", optimizer)
        _emit("run.started", run_id, optimizer=optimizer, resumed=resumed)
        return run

    # --- steps --------------------------------------------------------------------

    async def step(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` once for this run; on resume return its stored result."""
        found, value = self.store.get_step(self.run_id, key)
        if found:
            self.replayed_steps += 1
            return value
        self.budget.check()  # a spent budget raises BudgetExceededError with the reason
        from dspex.clients.usage import track_usage

        with budget_scope(self.budget), track_usage() as tracker:
            value = await fn()
        self._charge(tracker)
        # With redactors configured the stored copy holds placeholders (this run goes on
        # with the value as computed; a resumed one replays the placeholders, which is
        # what the LM would have been sent anyway).
        self.store.put_step(self.run_id, key, redacted_for_storage(value))
        return value

    def _charge(self, tracker: Any) -> None:
        for model, usage in tracker.by_model().items():
            self._usage = self._usage + usage
            if usage.calls:
                self.store.add_usage(
                    self.run_id,
                    model,
                    calls=usage.calls,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost=usage.cost or 0.0,
                )

    # --- evaluation, trials, best -----------------------------------------------------------

    def evaluates_in_process(self, devset: Sequence[Any]) -> bool:
        """Whether `evaluate` would run ``devset``'s examples in this process."""
        if self.evaluator is None:
            return True
        decide = getattr(self.evaluator, "runs_in_process", None)
        return bool(decide(devset)) if decide is not None else False

    async def evaluate(self, program: Any, devset: Iterable[Any], metric: Any, **options: Any) -> Any:
        """Evaluate through the run's evaluator (in-process unless the runtime provides one).

        Raises BudgetExceededError if the budget ran out during the evaluation:
        examples cut off by it would otherwise score as failures, and a
        truncated score must never be stored or compared.
        """
        from dspex.errors import EvaluationError

        try:
            if self.evaluator is not None:
                result = await self.evaluator(program, devset, metric, **options)
            else:
                from dspex.evaluate.evaluate import Evaluate

                options.setdefault("display_progress", False)
                evaluator = Evaluate(devset=list(devset), metric=metric, **options)
                result = await evaluator.acall(program)
        except EvaluationError as exc:
            if any(isinstance(error, BudgetExceededError) for _, error in exc.failures):
                raise BudgetExceededError(f"the budget ran out during an evaluation: {exc}") from exc
            raise
        for failure in getattr(result, "errors", None) or []:
            if getattr(failure, "error_type", None) == BudgetExceededError.__name__:
                raise BudgetExceededError(f"the budget ran out during an evaluation: {failure.message}")
        remote = getattr(self.evaluator, "remote", False) if self.evaluator else _evaluated_remotely()
        if remote:
            self._charge_remote(
                getattr(result, "usage", None), getattr(result, "budget_charged", False)
            )
        return result

    def _charge_remote(self, usage: Usage | None, budget_charged: bool = False) -> None:
        """Count LM work done on EvalWorkers, which this process's trackers cannot see.

        The Ray runner spends the budget itself, through leases its workers
        reserve from before each request (``budget_charged``), so the limit holds
        exactly; an evaluator that does not is charged here, after the fact.
        """
        if usage is None or not usage.calls:
            return
        if not budget_charged:
            self.budget.charge(usage)
        from dspex.primitives.settings import settings

        model = getattr(settings.lm, "model", None) or "unknown"
        self.store.add_usage(
            self.run_id,
            model,
            calls=usage.calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=usage.cost or 0.0,
        )

    def record_trial(
        self,
        number: int,
        params: dict[str, Any],
        *,
        score: float | None,
        error: BaseException | None = None,
        kind: str = "trial",
    ) -> None:
        status = "failed" if error is not None else "scored"
        message = None if error is None else "".join(traceback.format_exception_only(type(error), error)).strip()
        self.store.record_trial(
            self.run_id, number, _plain(params), score=score, status=status, error=message, kind=kind
        )
        _emit(
            "trial.scored" if error is None else "trial.failed",
            self.run_id,
            number=number,
            score=score,
            trial_kind=kind,  # not `kind`: that is the event's own first argument
        )
        record_trial_result(self.run_id, number, score=score, error=error, kind=kind)

    def offer(self, program: Any, score: float, label: str = "") -> bool:
        """Keep ``program`` if it beats the best so far; returns whether it did."""
        if score > self.best.score:
            self.best = _Best(score, program, label)
            self.store.update_run(self.run_id, best_score=score)
            return True
        return False

    # --- ending ---------------------------------------------------------------------

    def finish(
        self, status: str, error: BaseException | None = None, *, program: Any = None
    ) -> RunInfo:
        """End the run with ``status``; ``program`` (the one compile returns) is stored
        with it, so the run store can hand it out wherever the run ran."""
        budget_limited = status == "budget_limited"
        best_score = None if self.best.program is None else self.best.score
        if program is not None:
            self._store_program(program)
        self.store.update_run(
            self.run_id,
            status=status,
            budget_limited=budget_limited,
            best_score=best_score,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        _emit("run.finished", self.run_id, status=status, best_score=best_score)
        return RunInfo(
            run_id=self.run_id,
            optimizer=self.optimizer,
            status=status,
            best_score=best_score,
            budget_limited=budget_limited,
            lm_calls=self.budget.calls,
            cost=self.budget.cost,
            replayed_steps=self.replayed_steps,
            elapsed=time.monotonic() - self.started,
        )


    def _store_program(self, program: Any) -> None:
        # The JSON `program.save("x.json")` writes: learned state only, secret-named
        # entries scrubbed (dump_state does it; scrubbing again costs nothing).
        from dspex.primitives import saving

        dump = getattr(program, "dump_state", None)
        if dump is None:
            name = type(program).__name__
            log.warning("run %s: a %s has no dump_state(); no program stored", self.run_id, name)
            return
        try:
            state = redacted_for_storage(without_secrets(dump()))  # placeholders, with redactors
            document = {**state, saving.METADATA_KEY: saving.metadata()}
            text = json.dumps(document, indent=2, ensure_ascii=False, default=saving.json_default)
        except Exception as exc:  # the run's result stands; only its stored copy is missing
            log.warning("run %s: program not stored: %s: %s", self.run_id, type(exc).__name__, exc)
            return
        self.store.put_program(self.run_id, text)


def _evaluated_remotely() -> bool:
    """Whether `Evaluate` (default runner) does the LM work in other processes."""
    from dspex.evaluate.runners import default_runner

    return default_runner().remote


def _plain(value: Any) -> Any:
    """Reduce a config to JSON-able plain values, dropping anything secret."""
    if isinstance(value, dict):
        return {
            str(k): _plain(v)
            for k, v in value.items()
            if not is_secret_name(str(k))
        }
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return type(value).__name__


def _emit(kind: str, run_id: str, /, **data: Any) -> None:
    try:
        emit(kind, f"run:{run_id}", run_id=run_id, **data)
    except Exception:  # events are best-effort; a run never fails because of them
        log.debug("event %s not emitted", kind, exc_info=True)


__all__ = ["BudgetExceededError", "Run", "RunInfo"]
