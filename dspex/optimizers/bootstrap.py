"""BootstrapFewShot: demos from the teacher's own successful runs.

The teacher (a copy of the student, given labeled demos unless it is already
compiled) runs over the trainset under a trace. A run whose prediction passes
the metric turns its trace into one demo per predictor; once
``max_bootstrapped_demos`` examples have passed, the rest of each predictor's
``max_labeled_demos`` slots are filled with labeled examples that gave no demo.

DSPy walks the trainset one example at a time. Here the teacher runs on many
examples at once (at most ``num_threads``), and the results are read back in
trainset order, stopping at the same example the serial loop would stop at, so
the compiled program is the same as the serial algorithm's; runs started past
that point are cancelled (at most ``num_threads - 1`` wasted). Every example's
rounds are one durable step of the run, so a resumed compile replays them.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import inspect
import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from dspex.errors import BootstrapError, BudgetExceededError, ConfigurationError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.labeled import reject_unknown_options, with_labeled_demos
from dspex.optimizers.run import Run
from dspex.primitives.example import Example
from dspex.primitives.settings import context, settings

log = logging.getLogger("dspex.optimizers")

T = TypeVar("T")
StepRunner = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""``await step(key, fn)``: `Run.step`, or `run_directly` outside a run."""

#: the seed DSPy uses for shuffling and sampling the labeled fill-in demos
FILL_SEED = 0


async def run_directly(key: str, fn: Callable[[], Awaitable[T]]) -> T:
    """A step with no run behind it: no checkpoint, just the work (KNNFewShot at inference)."""
    return await fn()


class Limiter:
    """A counting semaphore that hands free slots to the waiter with the lowest priority.

    Shared by all the work of one compile so that, with every candidate running
    at once, earlier work (lower priority tuples: earlier candidates, earlier
    examples) still goes first: under a budget the candidates that finish are
    the ones the serial algorithm would have finished. Equal priorities are
    served first come, first served.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ConfigurationError(f"a limiter needs at least one slot, got {slots}")
        self.slots = slots
        self._free = slots
        self._waiters: list[tuple[tuple[Any, ...], int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: tuple[Any, ...] = ()) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: tuple[Any, ...] = ()) -> None:
        # Waiters cancelled while queued stay in the heap until they surface.
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted just as we were cancelled: pass the slot on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():  # skip waiters cancelled while queued
                granted.set_result(None)
                return
        self._free += 1


@dataclass(frozen=True)
class Attempt:
    """One teacher run on one example in one round: plain data, stored as a step."""

    passed: bool
    demos: Mapping[str, Example]
    """predictor name -> the demo its trace gave (empty unless passed)"""
    error: str | None = None
    """``"Type: message"`` when the teacher or the metric raised"""


@dataclass(frozen=True)
class Bootstrapped:
    """What one pass over a trainset found."""

    demos: Mapping[str, list[Example]]
    """predictor name -> demos, in trainset order"""
    used: tuple[int, ...]
    """positions of the trainset examples that gave demos"""
    attempts: int
    failures: tuple[tuple[int, str], ...]


class BootstrapFewShot(Teleprompter):
    """Few-shot demos bootstrapped from the teacher's traces (DSPy-compatible).

    ``compile(student, *, trainset, teacher=None)``. Beyond DSPy's options:
    ``num_threads`` bounds the teacher runs in flight (default
    ``settings.num_threads``). ``max_errors`` (default ``settings.max_errors``):
    as in DSPy, the max_errors-th teacher run that raises stops the compile with
    that run's own exception (a note lists the failures so far); a failure that
    crossed processes, or was replayed from a stored run, raises `BootstrapError`.
    Rounds after the first run the teacher with ``temperature=1.0`` and the
    round number as ``seed`` and ``rollout_id``.
    """

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        metric_threshold: float | None = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        _check_count("max_bootstrapped_demos", max_bootstrapped_demos, 0)
        _check_count("max_labeled_demos", max_labeled_demos, 0)
        _check_count("max_rounds", max_rounds, 1)
        if max_errors is not None:
            _check_count("max_errors", max_errors, 0)
        if num_threads is not None:
            _check_count("num_threads", num_threads, 1)
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings = dict(teacher_settings or {})
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.num_threads = num_threads

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        teacher: Any = None,
        **kwargs: Any,
    ) -> Any:
        reject_unknown_options(type(self).__name__, kwargs)
        return await self.build(student, trainset=trainset, teacher=teacher, step=run.step)

    async def build(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        teacher: Any = None,
        step: StepRunner = run_directly,
        limiter: Limiter | None = None,
        key: str = "bootstrap",
        priority: int = 0,
    ) -> Any:
        """The compiled program, without opening a run of its own.

        The building block of `compile` and of optimizers that bootstrap many
        demo sets (BootstrapRS, KNNFewShot, MIPROv2): ``step`` checkpoints each
        example's rounds under ``f"{key}/{position}"`` (pass ``run.step``),
        ``limiter`` bounds the teacher runs in flight (share one across passes),
        and ``priority`` orders this pass's runs against other passes' on it.
        """
        program = prepare_student(student)
        chosen = self.prepare_teacher(student, teacher, trainset)
        check_compatible(program, chosen)
        found = await self.bootstrap(chosen, trainset, step=step, limiter=limiter, key=key, priority=priority)
        program = assemble(program, found, trainset, self.max_bootstrapped_demos, self.max_labeled_demos)
        program._compiled = True
        return program

    def prepare_teacher(self, student: Any, teacher: Any, trainset: Sequence[Any]) -> Any:
        """A copy of the teacher (default: the student), given labeled demos unless compiled."""
        chosen = teacher.deepcopy() if teacher is not None else student.deepcopy()
        if self.max_labeled_demos and not getattr(chosen, "_compiled", False):
            chosen = with_labeled_demos(chosen.reset_copy(), trainset, self.max_labeled_demos)
        return chosen

    async def bootstrap(
        self,
        teacher: Any,
        trainset: Sequence[Any],
        *,
        step: StepRunner = run_directly,
        limiter: Limiter | None = None,
        key: str = "bootstrap",
        priority: int = 0,
    ) -> Bootstrapped:
        """Run ``teacher`` over ``trainset`` and collect the demos of passing traces."""
        limit = self.max_errors if self.max_errors is not None else settings.max_errors
        threads = self.num_threads or settings.num_threads
        bootstrap = _Pass(
            self, teacher, list(trainset), step, limiter or Limiter(threads), key, limit, threads, priority
        )
        found = await bootstrap.run()
        log.info(
            "%s: %d demo example(s) from %d teacher run(s), %d failed",
            key, len(found.used), found.attempts, len(found.failures),
        )
        return found


class _Pass:
    """One bootstrap pass: concurrent teacher runs, results read in trainset order."""

    def __init__(
        self,
        owner: BootstrapFewShot,
        teacher: Any,
        trainset: list[Any],
        step: StepRunner,
        limiter: Limiter,
        key: str,
        max_errors: int | None,
        window: int,
        priority: int,
    ) -> None:
        self.owner = owner
        self.trainset = trainset
        self.step = step
        self.limiter = limiter
        self.key = key
        self.max_errors = max_errors
        self.window = window
        self.priority = priority
        self.judge = _Judge(owner.metric, owner.metric_threshold)
        self._round_teachers: dict[int, Any] = {0: teacher}
        self._raised: dict[str, Exception] = {}
        """A failure's text -> the exception raised in this process (attempts store text)."""

    async def run(self) -> Bootstrapped:
        if self.owner.max_bootstrapped_demos <= 0:
            return Bootstrapped({}, (), 0, ())
        started: dict[int, asyncio.Future[tuple[Attempt, ...]]] = {}
        try:
            return await self._collect(started)
        finally:
            await cancel_and_wait(started.values())

    def _start_from(
        self, started: dict[int, asyncio.Future[tuple[Attempt, ...]]], index: int, ahead: int
    ) -> asyncio.Future[tuple[Attempt, ...]]:
        # A sliding window: only the `ahead` examples from the first unread one run, so
        # at most ahead - 1 runs are wasted past the point where the serial loop stops.
        for position in range(index, min(index + ahead, len(self.trainset))):
            if position not in started:
                started[position] = asyncio.ensure_future(self._example(position, self.trainset[position]))
        return started[index]

    def _ahead(self, needed: int, passed: int, read: int) -> int:
        """How many examples to run at once: enough to find the demos still needed
        at the pass rate seen so far (optimistic at first), at most `window`."""
        rate = (passed + 1) / (read + 1)
        return max(1, min(self.window, math.ceil(needed / rate)))

    async def _collect(self, started: dict[int, asyncio.Future[tuple[Attempt, ...]]]) -> Bootstrapped:
        demos: dict[str, list[Example]] = {}
        used: list[int] = []
        failures: list[tuple[int, str]] = []
        attempts = 0
        wanted = self.owner.max_bootstrapped_demos
        for index in range(len(self.trainset)):
            if len(used) >= wanted:
                break
            ahead = self._ahead(wanted - len(used), len(used), index)
            for attempt in await self._start_from(started, index, ahead):
                attempts += 1
                if attempt.error is not None:
                    failures.append((index, attempt.error))
                    self._check_errors(failures)
                if attempt.passed:
                    for name, demo in attempt.demos.items():
                        demos.setdefault(name, []).append(demo)
                    used.append(index)
        return Bootstrapped(demos, tuple(used), attempts, tuple(failures))

    def _check_errors(self, failures: list[tuple[int, str]]) -> None:
        if self.max_errors is None or len(failures) < max(self.max_errors, 1):
            return
        shown = "\n".join(
            f"  #{index} {_preview(self.trainset[index])}: {error}" for index, error in failures[:5]
        )
        summary = (
            f"bootstrapping stopped: {len(failures)} teacher runs failed, reaching "
            f"max_errors={self.max_errors}. First failures:\n{shown}\nWhat to do: fix the program "
            "or metric if the errors come from code; check the LM if they are LM errors; raise "
            "max_errors= if some failures are expected."
        )
        original = self._raised.get(failures[-1][1])
        if original is not None:
            original.add_note(summary)  # DSPy re-raises the teacher's own error
            raise original
        raise BootstrapError(summary, failures=failures)

    async def _example(self, index: int, example: Any) -> tuple[Attempt, ...]:
        async with self.limiter.slot((self.priority, 0, index)):
            result: tuple[Attempt, ...] = await self.step(
                f"{self.key}/{index}", lambda: self._rounds(example)
            )
            return result

    async def _rounds(self, example: Any) -> tuple[Attempt, ...]:
        # Rounds of one example run in order: a later round only if the earlier failed.
        attempts: list[Attempt] = []
        for round_index in range(self.owner.max_rounds):
            attempt = await self._attempt(example, round_index)
            attempts.append(attempt)
            if attempt.passed:
                break
        return tuple(attempts)

    async def _attempt(self, example: Any, round_index: int) -> Attempt:
        teacher = self._teacher_for(example, round_index)
        names = {id(p): name for name, p in teacher.named_predictors()}
        trace: list[Any] = []
        try:
            with context(trace=trace, **self.owner.teacher_settings):
                prediction = await teacher.acall(**_inputs(example))
            # The metric runs outside the trace: an LM judge's calls are not demos.
            passed = await self.judge(example, prediction, trace)
        except BudgetExceededError:
            raise
        except Exception as exc:
            log.debug("teacher run failed on %s", _preview(example), exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
            self._raised[error] = exc
            return Attempt(False, {}, error)
        if not passed:
            return Attempt(False, {})
        return Attempt(True, demos_from_trace(trace, names))

    def _teacher_for(self, example: Any, round_index: int) -> Any:
        teacher = self._round_teacher(round_index)
        if not any(_same(d, example) for _, p in teacher.named_predictors() for d in p.demos):
            return teacher
        # The example is one of the teacher's own demos: hide it, or the LM copies the answer.
        # A copy, since other examples run on the shared teacher at the same time.
        own = teacher.deepcopy()
        for _, predictor in own.named_predictors():
            predictor.demos = [d for d in predictor.demos if not _same(d, example)]
        return own

    def _round_teacher(self, round_index: int) -> Any:
        teacher = self._round_teachers.get(round_index)
        if teacher is None:
            teacher = self._round_teachers[0].deepcopy()
            for _, predictor in teacher.named_predictors():
                update = getattr(predictor, "update_config", None)
                if callable(update):
                    # A fresh sample per round: temperature 1 with the round as seed (and as
                    # rollout id, so the cache keeps rounds apart), reproducible on resume.
                    update(temperature=1.0, rollout_id=round_index, seed=round_index)
            self._round_teachers[round_index] = teacher
        return teacher


class _Judge:
    """Whether a teacher run passes: the metric (if any) against the threshold (if any)."""

    def __init__(self, metric: Callable[..., Any] | None, threshold: float | None) -> None:
        self.metric = metric
        self.threshold = threshold
        self.with_trace = metric is not None and _accepts(metric, 3)

    async def __call__(self, example: Any, prediction: Any, trace: list[Any]) -> bool:
        if self.metric is None:
            return True
        value = self.metric(example, prediction, trace) if self.with_trace else self.metric(example, prediction)
        if inspect.isawaitable(value):
            value = await value
        if self.threshold is not None:
            return bool(value >= self.threshold)
        return bool(value)


# --- building the program ---------------------------------------------------------


def prepare_student(student: Any) -> Any:
    if getattr(student, "_compiled", False):
        raise ConfigurationError(
            "the student is already compiled; pass an uncompiled program (the original, "
            "not an optimizer's output), or pass the compiled one as teacher="
        )
    return student.reset_copy()


def check_compatible(student: Any, teacher: Any) -> None:
    """The teacher's traces map onto the student by predictor name: same structure needed."""
    mine = student.named_predictors()
    theirs = teacher.named_predictors()
    if [n for n, _ in mine] != [n for n, _ in theirs]:
        raise ConfigurationError(
            f"the teacher's predictors {[n for n, _ in theirs]} differ from the student's "
            f"{[n for n, _ in mine]}; the teacher must be the same program structure"
        )
    for (name, ours), (_, other) in zip(mine, theirs, strict=True):
        a, b = getattr(ours, "signature", None), getattr(other, "signature", None)
        if a is not None and b is not None and not a.equals(b):
            raise ConfigurationError(
                f"predictor {name!r}: the teacher's signature {b!r} differs from the student's {a!r}"
            )


def assemble(
    program: Any, found: Bootstrapped, trainset: Sequence[Any], max_bootstrapped: int, max_labeled: int
) -> Any:
    """Give each predictor its bootstrapped demos, then labeled ones that gave none (in place)."""
    used = set(found.used)
    raw = [example for index, example in enumerate(trainset) if index not in used]
    random.Random(FILL_SEED).shuffle(raw)
    rng = random.Random(FILL_SEED)
    for name, predictor in program.named_predictors():
        augmented = list(found.demos.get(name, []))[:max_bootstrapped]
        size = max(0, min(max_labeled - len(augmented), len(raw)))
        # Each predictor samples from the previous one's sample, as DSPy does.
        raw = rng.sample(raw, size)
        predictor.demos = augmented + raw
    return program


def demos_from_trace(trace: Iterable[Any], names: Mapping[int, str]) -> dict[str, Example]:
    """One demo per teacher predictor that appears in the trace."""
    per_name: dict[str, list[Example]] = {}
    for predictor, inputs, outputs in trace:
        name = names.get(id(predictor))
        if name is None:
            continue  # a predictor outside the teacher (nothing of the student to teach)
        fields = {**dict(inputs), **_fields(outputs)}
        per_name.setdefault(name, []).append(Example(fields, augmented=True))
    return {name: _pick_one(demos) for name, demos in per_name.items()}


def _pick_one(demos: list[Example]) -> Example:
    # A predictor called several times in one run: the last call, or (half the time)
    # a random earlier one, seeded by the demos so the choice is reproducible.
    if len(demos) == 1:
        return demos[0]
    digest = hashlib.sha256(repr([d.toDict() for d in demos]).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return rng.choice(demos[:-1]) if rng.random() < 0.5 else demos[-1]


# --- small helpers ------------------------------------------------------------------


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what is still running and wait until it has unwound."""
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        # Speculative work past the stopping point may have failed: consume its
        # exception so asyncio does not report it as never retrieved.
        if task.done() and not task.cancelled():
            task.exception()


def _inputs(example: Any) -> dict[str, Any]:
    return dict(example.inputs().items())


def _fields(prediction: Any) -> dict[str, Any]:
    items = getattr(prediction, "items", None)
    return dict(items()) if callable(items) else dict(prediction)


def _same(demo: Any, example: Any) -> bool:
    return demo is example or (isinstance(demo, Example) and demo == example)


def _preview(example: Any, width: int = 80) -> str:
    try:
        text = repr(_inputs(example))
    except Exception:
        text = repr(example)
    return text if len(text) <= width else text[: width - 1] + "…"


def _accepts(fn: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(fn).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature to read: DSPy always passes the trace
        return True
    return True


def _check_count(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")


__all__ = [
    "Attempt",
    "BootstrapError",
    "BootstrapFewShot",
    "Bootstrapped",
    "Limiter",
    "assemble",
    "cancel_and_wait",
    "run_directly",
]
