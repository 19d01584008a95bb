"""LabeledFewShot: every predictor gets up to ``k`` labeled training examples as demos.

No LM calls. Demos are drawn with one ``random.Random(0)`` shared by the
predictors in ``named_predictors()`` order, so a compile is reproducible and
two predictors of one program usually get different samples (as in DSPy).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from dspex.errors import ConfigurationError
from dspex.optimizers.base import Teleprompter
from dspex.optimizers.run import Run

LABELED_SEED = 0


def with_labeled_demos(program: Any, trainset: Sequence[Any], k: int, *, sample: bool = True) -> Any:
    """Set up to ``k`` demos from ``trainset`` on every predictor of ``program`` (in place).

    ``sample=True`` draws them at random (seed 0); ``sample=False`` takes the first ``k``.
    Returns ``program`` for chaining.
    """
    count = min(k, len(trainset))
    rng = random.Random(LABELED_SEED)
    for _, predictor in program.named_predictors():
        chosen = rng.sample(list(trainset), count) if sample else list(trainset[:count])
        predictor.demos = chosen
    return program


class LabeledFewShot(Teleprompter):
    """Few-shot demos straight from the labeled trainset."""

    def __init__(self, k: int = 16) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigurationError(f"LabeledFewShot(k=...) must be an int >= 0, got {k!r}")
        self.k = k

    async def _compile(
        self,
        run: Run,
        student: Any,
        *,
        trainset: list[Any],
        valset: Sequence[Any] | None,
        sample: bool = True,
        **kwargs: Any,
    ) -> Any:
        reject_unknown_options(type(self).__name__, kwargs)
        # Not marked compiled (as in DSPy): the result may still serve as a student
        # or be relabeled as a teacher by BootstrapFewShot.
        return with_labeled_demos(student.reset_copy(), trainset, self.k, sample=sample)


def reject_unknown_options(optimizer: str, options: dict[str, Any]) -> None:
    """Fail loudly on a misspelt compile option instead of ignoring it."""
    if options:
        raise ConfigurationError(
            f"{optimizer}.compile() got unexpected option(s) {sorted(options)}; "
            "check the spelling against the optimizer's documentation"
        )


__all__ = ["LabeledFewShot", "with_labeled_demos"]
