"""BootstrapFewShotWithRandomSearch (BootstrapRS): many demo sets, keep the best.

Candidates, by seed as in DSPy: -3 zero-shot, -2 labeled demos only, -1 a
bootstrap over the trainset in order, then one per seed 0..N-1 over the
trainset shuffled by that seed with a random number of bootstrapped demos.
Each is scored on the valset (default: the trainset).

DSPy builds and scores candidates one after another. Here every candidate's
bootstrap and evaluation run at once, with one limit (``num_threads``) on the
program runs in flight across all of them. Results are read back in seed
order, so trials, the best program and ``stop_at_score`` come out as in the
serial algorithm whatever order the work finishes in. Each bootstrapped
example and each candidate's score is a durable step of the run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from dspex.errors import BudgetExceededError, ConfigurationError, SearchError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.bootstrap import BootstrapFewShot, Limiter, cancel_and_wait
from dspex.optimizers.labeled import reject_unknown_options, with_labeled_demos
from dspex.optimizers.run import Run
from dspex.primitives.settings import settings

log = logging.getLogger("dspex.optimizers")

ZERO_SHOT, LABELED, UNSHUFFLED = -3, -2, -1


class CandidatePrograms(Sequence[dict[str, Any]]):
    """The scored candidates, best first: ``{"score", "subscores", "seed", "program"}`` each.

    A read-only sequence rather than a list so that a program's parameter walk
    (which descends into lists and dicts) does not mistake the candidates'
    predictors for the program's own.
    """

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._items)

    def __repr__(self) -> str:
        scores = ", ".join(f"seed {c['seed']}: {c['score']}" for c in self._items)
        return f"CandidatePrograms([{scores}])"


@dataclass
class _Candidate:
    seed: int
    program: Any = None
    score: float | None = None
    subscores: list[float] = field(default_factory=list)
    error: Exception | None = None


class BootstrapFewShotWithRandomSearch(Teleprompter):
    """Random search over bootstrapped demo sets, scored on a valset (DSPy-compatible)."""

    def __init__(
        self,
        metric: Callable[..., Any],
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
    ) -> None:
        # Validates the shared settings once, with BootstrapFewShot's messages.
        BootstrapFewShot(
            metric, metric_threshold, teacher_settings, max_bootstrapped_demos,
            max_labeled_demos, max_rounds, max_errors, num_threads,
        )
        self.metric = metric
        self.teacher_settings = dict(teacher_settings or {})
        self.max_rounds = max_rounds
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.min_num_samples = 1
        self.max_num_samples = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.num_candidate_sets = num_candidate_programs

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        teacher: Any = None,
        restrict: Iterable[int] | None = None,
        labeled_sample: bool = True,
        **kwargs: Any,
    ) -> Any:
        reject_unknown_options(type(self).__name__, kwargs)
        allowed = None if restrict is None else set(restrict)  # read once: it may be an iterator
        seeds = [s for s in range(ZERO_SHOT, self.num_candidate_sets) if allowed is None or s in allowed]
        if not seeds:
            raise ConfigurationError(
                f"restrict={sorted(allowed or ())} matches no candidate seed: seeds run from "
                f"{ZERO_SHOT} (zero-shot) to {self.num_candidate_sets - 1}"
            )
        search = _Search(self, run, student, teacher, trainset, list(valset or trainset), labeled_sample)
        return await search.run(seeds)

    def bootstrapper(self, max_bootstrapped_demos: int) -> BootstrapFewShot:
        return BootstrapFewShot(
            metric=self.metric,
            metric_threshold=self.metric_threshold,
            teacher_settings=self.teacher_settings,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
            max_errors=self.max_errors if self.max_errors is not None else settings.max_errors,
            num_threads=self.num_threads,
        )

    def demo_count(self, seed: int) -> int:
        """How many demos the candidate of ``seed`` bootstraps (random for seeds >= 0)."""
        if seed < 0 or self.max_num_samples < self.min_num_samples:
            return self.max_num_samples
        return random.Random(seed).randint(self.min_num_samples, self.max_num_samples)


BootstrapRS = BootstrapFewShotWithRandomSearch


class _Search:
    """One random search: candidate tasks, read back in seed order."""

    def __init__(
        self,
        owner: BootstrapFewShotWithRandomSearch,
        run: Run,
        student: Any,
        teacher: Any,
        trainset: list[Any],
        valset: list[Any],
        labeled_sample: bool,
    ) -> None:
        self.owner = owner
        self.run_ = run
        self.student = student
        self.teacher = teacher
        self.trainset = trainset
        self.valset = valset
        self.labeled_sample = labeled_sample
        self.threads = owner.num_threads or settings.num_threads
        self.max_errors = owner.max_errors if owner.max_errors is not None else settings.max_errors
        # One limit on program runs in flight, shared by every bootstrap and evaluation,
        # that serves earlier seeds first.
        self.limiter = Limiter(self.threads)

    async def run(self, seeds: list[int]) -> Any:
        started: dict[int, asyncio.Future[_Candidate]] = {}
        try:
            return await self._collect(seeds, started)
        finally:
            await cancel_and_wait(started.values())

    def _window(self, count: int) -> int:
        # Under a budget, candidates run one after another (each still parallel
        # inside), so the budget is spent in seed order as the serial algorithm
        # would spend it and the candidates that finish are the early ones.
        budget = self.run_.budget
        return 1 if budget.max_calls is not None or budget.max_cost is not None else count

    def _start_from(self, seeds: list[int], started: dict[int, asyncio.Future[_Candidate]], index: int) -> asyncio.Future[_Candidate]:
        for ahead in range(index, min(index + self._window(len(seeds)), len(seeds))):
            if ahead not in started:
                started[ahead] = asyncio.ensure_future(self._candidate(seeds[ahead]))
        return started[index]

    # --- one candidate (runs concurrently with the others) ----------------------

    async def _candidate(self, seed: int) -> _Candidate:
        candidate = _Candidate(seed)
        try:
            candidate.program = await self._build(seed)
            score, subscores = await self.run_.step(
                f"evaluate/seed={seed}", lambda: self._evaluate(candidate.program, seed)
            )
        except Exception as exc:  # judged in seed order by _collect (a budget stop included)
            candidate.error = exc
            return candidate
        candidate.score, candidate.subscores = score, subscores
        return candidate

    async def _build(self, seed: int) -> Any:
        trainset = list(self.trainset)
        if seed == ZERO_SHOT:
            return self.student.reset_copy()
        if seed == LABELED:
            program = self.student.reset_copy()
            return with_labeled_demos(program, trainset, self.owner.max_labeled_demos, sample=self.labeled_sample)
        if seed >= 0:
            random.Random(seed).shuffle(trainset)
        bootstrapper = self.owner.bootstrapper(self.owner.demo_count(seed))
        return await bootstrapper.build(
            self.student,
            trainset=trainset,
            teacher=self.teacher,
            step=self.run_.step,
            limiter=self.limiter,
            key=f"bootstrap/seed={seed}",
            priority=seed,
        )

    async def _evaluate(self, program: Any, seed: int) -> tuple[float, list[float]]:
        # The shared limit holds wherever the examples run in this process (the runtime
        # evaluates small valsets inside the coordinator too). Examples fanned out to other
        # processes get the program itself: the limiter belongs to this event loop and cannot
        # travel; each such evaluation is bounded by num_threads on its workers.
        local = self.run_.evaluates_in_process(self.valset)
        target = _Limited(program, self.limiter, seed) if local else program
        result = await self.run_.evaluate(
            target, self.valset, self.owner.metric, num_threads=self.threads, max_errors=self.max_errors
        )
        return float(result.score), [float(row[2]) for row in result.results]

    # --- reading results in seed order -----------------------------------------

    async def _collect(self, seeds: list[int], started: dict[int, asyncio.Future[_Candidate]]) -> Any:
        scored: list[_Candidate] = []
        failed: list[_Candidate] = []
        budget_stop: BudgetExceededError | None = None
        for index in range(len(seeds)):
            candidate = await self._start_from(seeds, started, index)
            self._record(candidate)
            if isinstance(candidate.error, BudgetExceededError):
                # Candidates run one at a time under a budget: none after this one has started.
                budget_stop = candidate.error
                break
            if candidate.error is not None:
                failed.append(candidate)
            else:
                scored.append(candidate)
                if self._reached_stop(candidate):
                    break
        return self._finish(scored, failed, budget_stop)

    def _record(self, candidate: _Candidate) -> None:
        params = self._params(candidate)
        number = candidate.seed - ZERO_SHOT
        if candidate.error is not None:
            self.run_.record_trial(number, params, score=None, error=candidate.error, kind="candidate")
            if not isinstance(candidate.error, BudgetExceededError):
                log.warning("candidate seed=%d failed: %s", candidate.seed, candidate.error)
            return
        assert candidate.score is not None
        self.run_.record_trial(number, params, score=candidate.score, kind="candidate")
        self.run_.offer(candidate.program, candidate.score, f"seed={candidate.seed}")
        log.info("candidate seed=%d scored %.2f", candidate.seed, candidate.score)

    def _params(self, candidate: _Candidate) -> dict[str, Any]:
        seed = candidate.seed
        strategy = {ZERO_SHOT: "zero-shot", LABELED: "labeled", UNSHUFFLED: "bootstrap"}.get(
            seed, "bootstrap-shuffled"
        )
        params: dict[str, Any] = {"seed": seed, "strategy": strategy}
        if seed >= UNSHUFFLED:
            params["max_bootstrapped_demos"] = self.owner.demo_count(seed)
        if candidate.program is not None:
            params["demos"] = {name: len(p.demos) for name, p in candidate.program.named_predictors()}
        return params

    def _reached_stop(self, candidate: _Candidate) -> bool:
        stop = self.owner.stop_at_score
        if stop is None or candidate.score is None or candidate.score < stop:
            return False
        log.info("stopping: candidate seed=%d scored %.2f >= stop_at_score", candidate.seed, candidate.score)
        return True

    def _finish(
        self, scored: list[_Candidate], failed: list[_Candidate], budget_stop: BudgetExceededError | None
    ) -> Any:
        if not scored:
            if budget_stop is not None:
                raise budget_stop
            first = failed[0]
            raise SearchError(
                f"all {len(failed)} candidates failed; the first (seed {first.seed}) with "
                f"{type(first.error).__name__}: {first.error}"
            ) from first.error
        best = scored[0]
        for candidate in scored[1:]:
            if candidate.score is not None and best.score is not None and candidate.score > best.score:
                best = candidate  # strictly better: ties go to the earlier seed, as in DSPy
        ranked = sorted(scored, key=lambda c: c.score or 0.0, reverse=True)
        best.program.candidate_programs = CandidatePrograms(
            [{"score": c.score, "subscores": c.subscores, "seed": c.seed, "program": c.program} for c in ranked]
        )
        if budget_stop is not None:
            raise budget_stop  # the run returns its best so far, which is `best`
        return best.program


class _Limited:
    """A program whose calls wait for a slot of a shared limiter, at a candidate's priority."""

    def __init__(self, program: Any, limiter: Limiter, priority: int) -> None:
        self.program = program
        self.limiter = limiter
        self.priority = priority
        self._calls = itertools.count()

    async def acall(self, **inputs: Any) -> Any:
        # After the candidate's own bootstrap (phase 0), in call order.
        async with self.limiter.slot((self.priority, 1, next(self._calls))):
            return await self.program.acall(**inputs)


__all__ = ["BootstrapFewShotWithRandomSearch", "BootstrapRS", "CandidatePrograms", "SearchError"]
