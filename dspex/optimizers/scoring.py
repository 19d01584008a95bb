"""Scoring candidate programs as durable trials, and running work side by side.

Instruction optimizers (COPRO, MIPROv2) score many candidate programs. Each
score is a `Run.step`, so a resumed run replays it, and its outcome is plain
data: a score, or the error that stopped the evaluation. A failure is a value,
not an exception, so one broken candidate never stops a search and the resumed
run sees exactly the failures the first run saw. Only a spent budget (and
cancellation) ends the search early.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from dspex.errors import BudgetExceededError, TrialFailedError

T = TypeVar("T")


@dataclass(frozen=True)
class TrialOutcome:
    """What scoring one candidate found: a percentage score, or the error."""

    score: float | None
    error_type: str | None = None
    error: str | None = None
    n_errors: int = 0
    n_examples: int = 0
    example_scores: tuple[float, ...] = ()
    """Each example's metric value in devset order (failures at ``failure_score``),
    when the caller asked to keep them."""

    @property
    def failed(self) -> bool:
        return self.score is None

    def exception(self) -> TrialFailedError | None:
        if self.score is not None:
            return None
        return TrialFailedError(self.error_type or "Error", self.error or "")


async def score_program(
    run: Any,
    key: str,
    program: Any,
    devset: Sequence[Any],
    metric: Any,
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    lm: Any = None,
    keep_example_scores: bool = False,
) -> TrialOutcome:
    """Evaluate ``program`` on ``devset`` as the durable step ``key``.

    The outcome is failed when the evaluation raised (for example more than
    ``max_errors`` examples failed) or when every example failed: a score
    computed from no successful example says nothing about the candidate.
    ``keep_example_scores`` stores each example's metric value with the outcome.
    """

    async def evaluate() -> TrialOutcome:
        options: dict[str, Any] = {"num_threads": num_threads, "max_errors": max_errors}
        try:
            with lm_context(lm):
                result = await run.evaluate(program, devset, metric, **options)
        except (BudgetExceededError, asyncio.CancelledError):
            raise
        except Exception as exc:
            return TrialOutcome(None, type(exc).__name__, str(exc), n_examples=len(devset))
        return _outcome_of(result, keep_example_scores)

    return await run.step(key, evaluate)


def _outcome_of(result: Any, keep_example_scores: bool = False) -> TrialOutcome:
    rows = len(result.results)
    errors = list(getattr(result, "errors", []))
    if rows and len(errors) >= rows:
        first = errors[0]
        message = f"all {rows} examples failed; first: {first.message}"
        return TrialOutcome(None, first.error_type, message, len(errors), rows)
    scores = tuple(float(score) for _, _, score in result.results) if keep_example_scores else ()
    return TrialOutcome(
        float(result.score), n_errors=len(errors), n_examples=rows, example_scores=scores
    )


@contextlib.contextmanager
def lm_context(lm: Any) -> Iterator[None]:
    """``context(lm=lm)`` when an LM is given, else nothing."""
    if lm is None:
        yield
        return
    from dspex.primitives.settings import context

    with context(lm=lm):
        yield


def params_key(params: dict[str, Any]) -> str:
    """A short stable digest of trial parameters, for step keys.

    Step keys carry it so a resumed run whose decisions diverged (say, after a
    code change) recomputes a trial instead of replaying another one's score.
    """
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all concurrently, results in order; on the first error cancel the rest and raise it.

    (asyncio.gather alone would leave the siblings running after an error, and
    TaskGroup is Python 3.11+.)
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def gather_settled(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all concurrently and let every one finish, then raise the first error if any.

    Used where each finished item is a stored step: work that completed before
    a sibling failed is kept for the resumed run instead of being cancelled.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)  # type: ignore[arg-type]


class ReadOnlyList(Sequence[dict[str, Any]]):
    """Records attached to a compiled program (``candidate_programs``).

    Not a list: a program's parameter walk descends into lists and dicts, and
    would take the candidates' predictors for the program's own.
    """

    def __init__(self, items: Iterable[dict[str, Any]]) -> None:
        self._items = list(items)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        scores = ", ".join(str(item.get("score")) for item in self._items)
        return f"{type(self).__name__}(scores=[{scores}])"


class ReadOnlyMapping(Mapping[int, dict[str, Any]]):
    """``trial_logs`` attached to a compiled program; not a dict, for the same reason."""

    def __init__(self, items: Mapping[int, dict[str, Any]]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: int) -> dict[str, Any]:
        return self._items[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._items)} trials)"


__all__ = [
    "ReadOnlyList",
    "ReadOnlyMapping",
    "TrialFailedError",
    "TrialOutcome",
    "gather_all",
    "gather_settled",
    "lm_context",
    "params_key",
    "score_program",
]
