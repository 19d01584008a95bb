"""Ensemble: run several programs on the same inputs and reduce their outputs.

``Ensemble(reduce_fn=majority).compile([p1, p2, p3])`` returns a program that
calls all of them (or a random ``size`` of them) concurrently, where DSPy calls
them one after another, and reduces the list of outputs with ``reduce_fn``.
Without a ``reduce_fn`` the program returns the list of outputs, as DSPy's does
(pass ``reduce_fn=dspex.majority`` to vote on the last output field).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from dspex.errors import ConfigurationError
from dspex.optimizers.base import Teleprompter
from dspex.primitives.module import Module
from dspex.primitives.prediction import Completions, Prediction


def default_normalize(value: Any) -> Hashable | None:
    """The normal form votes are counted on: text normalised as for exact match; None if empty."""
    if value is None:
        return None
    from dspex.evaluate.metrics import normalize_text

    return normalize_text(str(value)) or None


def majority(
    prediction_or_completions: Prediction | Completions | Sequence[Any],
    normalize: Callable[[Any], Hashable | None] | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The completion whose ``field`` value is most common (after ``normalize``).

    ``field`` defaults to the last output field. Ties go to the value seen
    first; values normalising to None vote only if nothing else does. Returns a
    Prediction holding the first completion with the winning value.
    """
    completions = _completions(prediction_or_completions)
    if not completions:
        raise ConfigurationError("majority() needs at least one completion to vote on")
    signature = getattr(prediction_or_completions, "signature", None)
    if isinstance(prediction_or_completions, Prediction):
        signature = prediction_or_completions.completions.signature
    field = field or _last_output_field(signature, completions[0])
    norm = normalize or (lambda value: value)
    votes = [norm(_value(completion, field)) for completion in completions]
    counted = [vote for vote in votes if vote is not None] or votes
    # Counter keeps first-seen order, and max() returns the first maximum: ties go to the earliest.
    counts = Counter(counted)
    winner = max(counts, key=lambda vote: counts[vote])
    chosen = completions[votes.index(winner)]
    return Prediction.from_completions([_fields(chosen)], signature=signature)


class Ensemble(Teleprompter):
    """Combine programs into one that runs them all and reduces their outputs."""

    def __init__(
        self,
        *,
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
        deterministic: bool = False,
    ) -> None:
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ConfigurationError(f"Ensemble(size=...) must be an int >= 1 or None, got {size!r}")
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = deterministic

    def compile(self, programs: Sequence[Any]) -> EnsembledProgram:  # type: ignore[override]
        """No LM work: the programs run (concurrently) when the ensemble is called."""
        programs = list(programs)
        if not programs:
            raise ConfigurationError("Ensemble.compile() needs at least one program")
        if self.size is not None and self.size > len(programs):
            raise ConfigurationError(f"Ensemble(size={self.size}) but only {len(programs)} programs were given")
        return EnsembledProgram(programs, self.reduce_fn or list, self.size, self.deterministic)

    async def acompile(self, programs: Sequence[Any]) -> EnsembledProgram:  # type: ignore[override]
        return self.compile(programs)


class EnsembledProgram(Module):
    """Runs its programs on the same inputs at once; returns ``reduce_fn(outputs)``."""

    def __init__(
        self,
        programs: list[Any],
        reduce_fn: Callable[[list[Any]], Any],
        size: int | None,
        deterministic: bool,
    ) -> None:
        super().__init__()
        self.programs = programs
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = deterministic
        self._rng = random.Random()

    async def aforward(self, **inputs: Any) -> Any:
        chosen = self.choose(inputs)
        outputs = await asyncio.gather(*(program.acall(**inputs) for program in chosen))
        return self.reduce_fn(list(outputs))

    def choose(self, inputs: dict[str, Any]) -> list[Any]:
        """All programs, or ``size`` of them: random, or fixed per input when deterministic."""
        if self.size is None:
            return list(self.programs)
        rng = random.Random(_inputs_seed(inputs)) if self.deterministic else self._rng
        picked = sorted(rng.sample(range(len(self.programs)), self.size))
        return [self.programs[i] for i in picked]


def _inputs_seed(inputs: dict[str, Any]) -> int:
    text = repr(sorted((str(k), repr(v)) for k, v in inputs.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _completions(value: Any) -> list[Any]:
    if isinstance(value, Prediction):
        return list(value.completions)
    if isinstance(value, Completions):
        return list(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    raise ConfigurationError(
        f"majority() takes a Prediction, Completions or a list of predictions, got {type(value).__name__}"
    )


def _last_output_field(signature: Any, first: Any) -> str:
    outputs = getattr(signature, "output_fields", None)
    if outputs:
        return list(outputs)[-1]
    keys = list(_fields(first))
    if not keys:
        raise ConfigurationError("majority(): the completions have no fields to vote on")
    return keys[-1]


def _fields(completion: Any) -> dict[str, Any]:
    items = getattr(completion, "items", None)
    return dict(items()) if callable(items) else dict(completion)


def _value(completion: Any, field: str) -> Any:
    return _fields(completion).get(field)


__all__ = ["EnsembledProgram", "Ensemble", "default_normalize", "majority"]
