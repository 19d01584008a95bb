"""`BestOfN`: run a module N times and keep the first good answer (DSPy's API).

``BestOfN(module, N, reward_fn, threshold)`` calls ``module`` N times, each time as its
own rollout: a copy of the module whose predictors' LMs carry a distinct ``rollout_id``
and ``temperature=1.0``, so neither the LM cache nor a greedy decode hands every
attempt the same answer. ``reward_fn(inputs, prediction)`` scores each attempt.

DSPy runs the attempts one after the other; here they run concurrently (asyncio tasks)
and the answer is still the one the sequential walk would give, whatever order the
attempts finish in: the lowest-index attempt whose reward reaches ``threshold``, else
the best-rewarded one (the lowest index among ties). Attempts that raise count against
``fail_count`` (N by default): the failure that takes the count past it is raised, and
so is the last error when every attempt failed. Once the lower-index attempts settle
the answer, the attempts still running are cancelled.

The trace of the chosen attempt is added to ``settings.trace`` with the original
module's predictors in it (not the per-attempt copies), so optimizers can learn from it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings

logger = logging.getLogger(__name__)

RewardFn = Callable[[dict[str, Any], Prediction], Any]

#: every attempt samples at this temperature, as DSPy's attempts do
ATTEMPT_TEMPERATURE = 1.0


# --- what BestOfN and Refine share -----------------------------------------------------


@dataclass
class Attempt:
    """One finished attempt: its prediction, reward and trace, or the error it raised."""

    index: int
    rollout_id: Any
    prediction: Any = None
    reward: float = float("-inf")
    trace: list[Any] = field(default_factory=list)
    error: BaseException | None = None


def check_attempt_args(owner: str, n: int, reward_fn: Any, fail_count: int | None) -> int:
    """Validate the constructor arguments; the fail_count to use (None: N)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigurationError(f"{owner}(N={n!r}): N is the number of attempts, an int >= 1")
    if not callable(reward_fn):
        raise ConfigurationError(
            f"{owner}(reward_fn={reward_fn!r}): reward_fn must be a callable "
            "reward_fn(inputs: dict, prediction) -> float"
        )
    if fail_count is None:
        return n
    if not isinstance(fail_count, int) or isinstance(fail_count, bool) or fail_count < 0:
        raise ConfigurationError(
            f"{owner}(fail_count={fail_count!r}): fail_count is how many failed attempts "
            "are tolerated, an int >= 0 (None: N)"
        )
    return fail_count


def rollout_ids(module: Module, n: int) -> list[Any]:
    """N distinct rollout ids, counted from the one already in force (the module's LM,
    else ``settings.rollout_id``, else 0), so nested or repeated BestOfN calls under a
    rollout of their own do not share cache entries with each other."""
    start = _lm_rollout_id(_single_lm(module))
    if start is None:
        start = settings.rollout_id
    if start is None:
        start = 0
    if isinstance(start, int) and not isinstance(start, bool):
        return [start + i for i in range(n)]
    return [f"{start}/{i}" for i in range(n)]


def attempt_copy(module: Module, rollout_id: Any) -> tuple[Module, dict[int, Any]]:
    """A deep copy of ``module`` whose predictors use an LM copy with this rollout id and
    temperature 1.0, and a map from each copied predictor (by id) to the original one."""
    copy = module.deepcopy()
    originals = [p for _, p in module.named_predictors()]
    copies = [p for _, p in copy.named_predictors()]
    lm_copies: dict[int, Any] = {}  # one copy per distinct LM, as predictors share LMs
    for predictor in copies:
        if not hasattr(predictor, "lm"):
            continue  # a user's Parameter that is not an LM step
        lm = predictor.lm if predictor.lm is not None else settings.lm
        if lm is None:
            raise ConfigurationError(
                f"{type(module).__name__} has a predictor with no LM and no LM is configured: "
                "call dspex.configure(lm=...) or module.set_lm(lm) before running attempts"
            )
        if id(lm) not in lm_copies:
            if not callable(getattr(lm, "copy", None)):
                raise ConfigurationError(
                    f"the LM {lm!r} has no copy(**overrides) method, so attempts cannot get "
                    "their own rollout_id and temperature; use a dspex.LM or a dspex.BaseLM subclass"
                )
            lm_copies[id(lm)] = lm.copy(rollout_id=rollout_id, temperature=ATTEMPT_TEMPERATURE)
        predictor.lm = lm_copies[id(lm)]
    return copy, {id(c): o for c, o in zip(copies, originals, strict=True)}


def original_trace(trace: Sequence[Any], originals: dict[int, Any], drop_inputs: Sequence[str] = ()) -> list[Any]:
    """``trace`` with each copied predictor replaced by the module's own (and, for
    Refine, its hint input removed), as if the module had been called directly."""
    entries = []
    for entry in trace:
        predictor, inputs, prediction = entry
        inputs = {k: v for k, v in inputs.items() if k not in drop_inputs}
        entries.append((originals.get(id(predictor), predictor), inputs, prediction))
    return entries


async def score(reward_fn: RewardFn, inputs: dict[str, Any], prediction: Any) -> float:
    """The reward, from a sync reward_fn (run in a thread: it may call an LM or block)
    or an async one."""
    fn = getattr(reward_fn, "fn", reward_fn)  # the user's function inside _RewardCall
    if inspect.iscoroutinefunction(fn):
        value = await fn(inputs, prediction)
    else:
        value = await asyncio.to_thread(reward_fn, inputs, prediction)
        if inspect.isawaitable(value):
            value = await value
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"reward_fn returned {value!r}, which is not a number; it must return a float "
            "(or something float() accepts, such as a bool)"
        ) from exc


def extend_trace(entries: list[Any]) -> None:
    trace = settings.trace
    if trace is not None and entries:
        trace.extend(entries)


def _single_lm(module: Module) -> Any:
    lms = {id(lm): lm for _, p in module.named_predictors() if (lm := getattr(p, "lm", None)) is not None}
    if len(lms) == 1:
        return next(iter(lms.values()))
    return settings.lm if not lms else None


def _lm_rollout_id(lm: Any) -> Any:
    if lm is None:
        return None
    value = getattr(lm, "rollout_id", None)
    if value is None:
        value = getattr(lm, "kwargs", {}).get("rollout_id")
    return value


class Outcome:
    """Walks finished attempts in index order, as a sequential run would meet them, and
    says when the result is settled: a passing attempt, or one failure too many."""

    def __init__(self, owner: str, threshold: float | None, fail_count: int) -> None:
        self.owner = owner
        self.threshold = threshold
        self.fail_count = fail_count
        self.failures = 0
        self.best: Attempt | None = None
        self.last_error: BaseException | None = None

    def add(self, attempt: Attempt) -> bool:
        """Take the next attempt (by index); True when no later attempt can change the result."""
        if attempt.error is not None:
            self.fail(attempt.index, attempt.rollout_id, attempt.error)
            return False
        if self.best is None or attempt.reward > self.best.reward:
            self.best = attempt
        return self.threshold is not None and attempt.reward >= self.threshold

    def fail(self, index: int, rollout_id: Any, error: BaseException) -> None:
        """Count a failure of attempt ``index``; raises it when it is one too many."""
        self.failures += 1
        self.last_error = error
        logger.warning(
            "%s: attempt %d (rollout_id=%r) failed: %s: %s",
            self.owner, index + 1, rollout_id, type(error).__name__, error,
        )
        if self.failures > self.fail_count:
            raise error

    def result(self) -> Attempt:
        if self.best is None:
            assert self.last_error is not None  # every attempt ends with a prediction or an error
            raise self.last_error
        return self.best


# --- BestOfN ---------------------------------------------------------------------------


class RewardedAttempts(Module):
    """What `BestOfN` and `Refine` share: up to N attempts of ``module``, judged by
    ``reward_fn`` against ``threshold``, at most ``fail_count`` of them failing."""

    def __init__(
        self,
        module: Module,
        N: int,  # DSPy's name
        reward_fn: RewardFn,
        threshold: float,
        fail_count: int | None = None,
    ) -> None:
        super().__init__()
        self.fail_count = check_attempt_args(type(self).__name__, N, reward_fn, fail_count)
        self.module = module
        # Wrapped so the walk over the program's parts never mistakes it for a sub-module.
        self.reward_fn: RewardFn = _RewardCall(reward_fn)
        self.threshold = threshold
        self.N = N


class BestOfN(RewardedAttempts):
    """Run ``module`` as N concurrent rollouts; return the first (by attempt index) whose
    reward reaches ``threshold``, else the best-rewarded. See the module docstring."""

    async def aforward(self, **kwargs: Any) -> Any:
        ids = rollout_ids(self.module, self.N)
        tasks = [asyncio.ensure_future(self._attempt(index, rid, kwargs)) for index, rid in enumerate(ids)]
        outcome = Outcome(type(self).__name__, self.threshold, self.fail_count)
        try:
            # Await in index order: each settled prefix is what the sequential walk saw;
            # the attempts themselves run concurrently all along.
            for task in tasks:
                attempt = await task
                if outcome.add(attempt):
                    break
        finally:
            for task in tasks:
                task.cancel()
            # Let cancelled tasks finish (their errors are not ours to raise).
            await asyncio.gather(*tasks, return_exceptions=True)
        chosen = outcome.result()
        extend_trace(chosen.trace)
        return chosen.prediction

    async def _attempt(self, index: int, rollout_id: Any, inputs: dict[str, Any]) -> Attempt:
        attempt = Attempt(index, rollout_id)
        try:
            module, originals = attempt_copy(self.module, rollout_id)
            with settings.context(trace=[]):
                attempt.prediction = await module.acall(**inputs)
                attempt.trace = original_trace(settings.trace, originals)
                # Inside the attempt's own trace, so the reward's LM calls (a judge) do not
                # land in the caller's trace; they are not kept in the attempt's either.
                attempt.reward = await score(self.reward_fn, inputs, attempt.prediction)
        except Exception as exc:  # an attempt's failure is counted against fail_count
            attempt.error = exc
        return attempt


class _RewardCall:
    """A reward function held by BestOfN/Refine: callable like it, pickles with it."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn

    def __call__(self, inputs: dict[str, Any], prediction: Any) -> Any:
        return self.fn(inputs, prediction)

    def __repr__(self) -> str:
        return f"reward_fn({getattr(self.fn, '__qualname__', self.fn)!r})"


__all__ = ["BestOfN"]
