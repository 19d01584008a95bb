"""MIPROv2's run-size presets and the plan a compile resolves to, without running anything.

``auto="light"|"medium"|"heavy"`` fixes the number of candidates ``n`` and a cap
on the validation set, as in DSPy: few-shot sets get ``n`` candidates,
instructions ``n/2`` (``n`` when optimizing zero-shot, where the whole budget
goes to instructions), and the number of trials is
``max(2 * V * log2(n), 1.5 * n)`` with ``V`` the number of searched variables
(one instruction and one demo-set choice per predictor). Minibatch scoring is
on when the validation set has more than 50 examples.

With ``auto=None`` the caller gives ``num_candidates`` and ``num_trials``
itself; giving them together with ``auto`` is an error, as in DSPy, since the
preset would silently overrule one or the other.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dspex.errors import ConfigurationError

T = TypeVar("T")


@dataclass(frozen=True)
class AutoPreset:
    n: int
    val_size: int


AUTO_PRESETS: dict[str, AutoPreset] = {
    "light": AutoPreset(n=6, val_size=100),
    "medium": AutoPreset(n=12, val_size=300),
    "heavy": AutoPreset(n=18, val_size=1000),
}
#: above this many validation examples, auto mode scores trials on minibatches
MIN_VALSET_FOR_MINIBATCH = 50
#: largest validation set carved out of the trainset when no valset is given
MAX_DEFAULT_VALSET = 1000


@dataclass(frozen=True)
class SearchPlan:
    """How big a MIPROv2 search is; every field is a plain value."""

    num_fewshot_candidates: int
    num_instruct_candidates: int
    num_trials: int
    minibatch: bool
    minibatch_size: int
    val_size: int
    zeroshot: bool


def is_zeroshot(max_bootstrapped_demos: int, max_labeled_demos: int) -> bool:
    return max_bootstrapped_demos == 0 and max_labeled_demos == 0


def trials_for(num_candidates: int, num_predictors: int, zeroshot: bool) -> int:
    """DSPy's trial count: ``max(2 * V * log2(n), 1.5 * n)``."""
    variables = num_predictors * (1 if zeroshot else 2)
    return int(max(2 * variables * math.log2(max(num_candidates, 1)), 1.5 * num_candidates))


def check_settings(auto: str | None, num_candidates: int | None, num_trials: int | None) -> None:
    """Raise for settings DSPy rejects: a preset plus explicit sizes, or neither."""
    if auto is not None and auto not in AUTO_PRESETS:
        raise ConfigurationError(
            f"auto={auto!r} is not a preset; use one of {sorted(AUTO_PRESETS)} or None"
        )
    if auto is not None and (num_candidates is not None or num_trials is not None):
        raise ConfigurationError(
            f"auto={auto!r} sets num_candidates and num_trials itself; either drop "
            "num_candidates/num_trials or pass auto=None to size the search by hand"
        )
    if auto is None and num_candidates is None:
        raise ConfigurationError(
            "with auto=None, give MIPROv2(num_candidates=...) and compile(num_trials=...), "
            "or use a preset: auto='light', 'medium' or 'heavy'"
        )
    if auto is None and num_trials is None:
        raise ConfigurationError(
            "with auto=None, compile(num_trials=...) is required; for "
            f"num_candidates={num_candidates} about trials_for(...) trials is a good start"
        )
    for name, value in (("num_candidates", num_candidates), ("num_trials", num_trials)):
        if value is not None and value < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {value}")


def resolve_plan(
    *,
    auto: str | None,
    num_candidates: int | None,
    num_trials: int | None,
    num_predictors: int,
    valset_size: int,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    minibatch: bool = True,
    minibatch_size: int = 35,
) -> SearchPlan:
    """The search sizes for these settings; ``valset_size`` is before any preset cap."""
    check_settings(auto, num_candidates, num_trials)
    zeroshot = is_zeroshot(max_bootstrapped_demos, max_labeled_demos)
    if auto is not None:
        preset = AUTO_PRESETS[auto]
        val_size = min(valset_size, preset.val_size)
        return SearchPlan(
            num_fewshot_candidates=preset.n,
            num_instruct_candidates=preset.n if zeroshot else max(preset.n // 2, 1),
            num_trials=trials_for(preset.n, num_predictors, zeroshot),
            minibatch=minibatch and val_size > MIN_VALSET_FOR_MINIBATCH,
            minibatch_size=min(minibatch_size, val_size),
            val_size=val_size,
            zeroshot=zeroshot,
        )
    assert num_candidates is not None and num_trials is not None
    if minibatch and minibatch_size > valset_size:
        raise ConfigurationError(
            f"minibatch_size={minibatch_size} is larger than the valset ({valset_size} "
            "examples); lower minibatch_size or pass minibatch=False"
        )
    if minibatch and minibatch_size < 1:
        raise ConfigurationError(f"minibatch_size must be at least 1, got {minibatch_size}")
    return SearchPlan(
        num_fewshot_candidates=num_candidates,
        num_instruct_candidates=num_candidates,
        num_trials=num_trials,
        minibatch=minibatch,
        minibatch_size=minibatch_size,
        val_size=valset_size,
        zeroshot=zeroshot,
    )


def split_datasets(trainset: Sequence[T], valset: Sequence[T] | None) -> tuple[list[T], list[T]]:
    """(trainset, valset); without a valset the last 80% (at most 1000) of the trainset."""
    if valset is not None:
        if len(valset) < 1:
            raise ConfigurationError("valset is empty; pass examples or leave it None")
        return list(trainset), list(valset)
    if len(trainset) < 2:
        raise ConfigurationError(
            "without a valset, MIPROv2 needs at least 2 trainset examples to carve one out"
        )
    val_size = min(MAX_DEFAULT_VALSET, max(1, int(len(trainset) * 0.8)))
    cut = len(trainset) - val_size
    return list(trainset[:cut]), list(trainset[cut:])


def subsample(items: Sequence[T], size: int, rng: random.Random) -> list[T]:
    """``size`` items drawn without replacement, kept in their original order."""
    if size >= len(items):
        return list(items)
    picked = sorted(rng.sample(range(len(items)), size))
    return [items[i] for i in picked]


def estimate_lm_calls(
    plan: SearchPlan,
    *,
    num_predictors: int,
    valset_size: int,
    program_aware: bool,
    calls_per_run: int | None = None,
    minibatch_full_eval_steps: int = 5,
) -> dict[str, Any]:
    """Upper-bound LM calls by model role, before any cache hit (for the run's log)."""
    per_run = calls_per_run or num_predictors
    prompt = 6 + num_predictors * max(plan.num_instruct_candidates - 1, 0)
    if program_aware:
        prompt += 1 + num_predictors
    if plan.minibatch:
        full_evals = plan.num_trials // max(minibatch_full_eval_steps, 1) + 1
        runs = plan.minibatch_size * plan.num_trials + valset_size * (full_evals + 1)
    else:
        runs = valset_size * (plan.num_trials + 1)
    return {"prompt_model_calls": prompt, "task_model_calls": runs * per_run}


__all__ = [
    "AUTO_PRESETS",
    "AutoPreset",
    "SearchPlan",
    "check_settings",
    "estimate_lm_calls",
    "is_zeroshot",
    "resolve_plan",
    "split_datasets",
    "subsample",
    "trials_for",
]
