"""`Refine`: retry a module with advice drawn from its failed attempt (DSPy's API).

``Refine(module, N, reward_fn, threshold)`` runs ``module`` up to N times, each time as
its own rollout (an LM copy with a distinct ``rollout_id`` and ``temperature=1.0``, as in
`BestOfN`). Unlike BestOfN the attempts are sequential by nature: when an attempt's
reward falls short of ``threshold``, an advice step (one LM call) looks at the module's
predictors, the inputs, each predictor call of the attempt, the outputs, the reward
function and the scores, and writes one piece of advice per predictor. The next attempt
gives each predictor its advice as an extra input field, ``hint_``.

It returns the first attempt that reaches the threshold, else the best-rewarded one (the
earliest among ties). Attempts that raise, and advice steps that raise, count against
``fail_count`` (N by default): the failure that takes the count past it is raised, and
so is the last error when no attempt produced a prediction.

The chosen attempt's trace goes to ``settings.trace`` with the module's own predictors
and without the ``hint_`` input, as if the module had been called directly.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Mapping
from typing import Any

from dspex.modules.best_of_n import (
    Attempt,
    Outcome,
    RewardedAttempts,
    RewardFn,
    _single_lm,
    attempt_copy,
    extend_trace,
    original_trace,
    rollout_ids,
    score,
)
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.settings import settings
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature

HINT_FIELD = "hint_"
HINT_DESC = "advice for this step, written after an earlier attempt at this same input fell short"
NO_ADVICE = "N/A"


class AdviseRetry(Signature):
    """A program was run on an input and its output scored below the target reward. It
    will be run on the same input again, and each of its predictors will see only the
    advice you write for it now (not this run). First work out which predictors caused
    the shortfall and how. Then, for every predictor named in predictor_names, write
    specific, actionable advice for its next attempt: what went wrong in its part of this
    run and what to do instead. A predictor that did nothing wrong gets "N/A"."""

    program_code: str = InputField(desc="source code of the program, where it is available")
    predictors: str = InputField(desc="each predictor of the program: its inputs, outputs and instructions")
    program_inputs: str = InputField(desc="the inputs the program was called with, as JSON")
    trajectory: str = InputField(desc="every predictor call of this run in order, with its inputs and outputs, as JSON")
    program_outputs: str = InputField(desc="what the program returned, as JSON")
    reward_code: str = InputField(desc="source code of the function that scored the outputs")
    reward: float = InputField(desc="the score this run's outputs got")
    threshold: float = InputField(desc="the score an attempt needs to reach")
    predictor_names: list[str] = InputField(desc="the predictors to advise, by name")
    analysis: str = OutputField(desc="which predictors caused the shortfall, and how")
    advice: dict[str, str] = OutputField(
        desc="for each predictor name: the mistake it made on this input and what it should do "
        "differently next time, concretely; N/A if it was not at fault"
    )


class Refine(RewardedAttempts):
    """Run ``module`` up to N times, feeding advice from each failed attempt into the
    next as a ``hint_`` input. See the module docstring."""

    def __init__(
        self,
        module: Module,
        N: int,  # DSPy's name
        reward_fn: RewardFn,
        threshold: float,
        fail_count: int | None = None,
    ) -> None:
        super().__init__(module, N, reward_fn, threshold, fail_count)
        self.module_code = program_code(module)
        self.reward_fn_code = _source(reward_fn)

    async def aforward(self, **kwargs: Any) -> Any:
        outcome = Outcome(type(self).__name__, self.threshold, self.fail_count)
        hints: dict[str, str] = {}
        for index, rollout_id in enumerate(rollout_ids(self.module, self.N)):
            attempt = Attempt(index, rollout_id)
            try:
                module, originals = attempt_copy(self.module, rollout_id)
                if hints:
                    _give_hints(module, hints)
                with settings.context(trace=[]):
                    attempt.prediction = await module.acall(**kwargs)
                    calls = list(settings.trace)
                    attempt.reward = await score(self.reward_fn, kwargs, attempt.prediction)
                attempt.trace = original_trace(calls, originals, drop_inputs=(HINT_FIELD,))
            except Exception as exc:  # counted against fail_count; the next attempt goes on
                outcome.fail(index, rollout_id, exc)
                continue
            if outcome.add(attempt) or index == self.N - 1:
                break
            try:
                hints = await self._advise(module, kwargs, calls, attempt)
            except Exception as exc:  # no advice is a failed step too, as in DSPy
                outcome.fail(index, rollout_id, exc)
        chosen = outcome.result()
        extend_trace(chosen.trace)
        return chosen.prediction

    async def _advise(
        self, module: Module, inputs: dict[str, Any], calls: list[Any], attempt: Attempt
    ) -> dict[str, str]:
        """One advice per predictor of ``module`` (the attempt's copy), by name."""
        names = {id(p): name for name, p in module.named_predictors()}
        trajectory = [
            {"predictor": names.get(id(p), type(p).__name__), "inputs": call_inputs, "outputs": _fields(outputs)}
            for p, call_inputs, outputs in calls
        ]
        advisor = Predict(AdviseRetry)
        advisor.lm = settings.lm or _single_lm(self.module)
        with settings.context(trace=[]):  # the advice step is no part of the program's trace
            result = await advisor.acall(
                program_code=self.module_code,
                predictors=describe_predictors(module),
                program_inputs=_json(inputs),
                trajectory=_json(trajectory),
                program_outputs=_json(_fields(attempt.prediction)),
                reward_code=self.reward_fn_code,
                reward=attempt.reward,
                threshold=float(self.threshold) if self.threshold is not None else float("inf"),
                predictor_names=list(names.values()),
            )
        advice = result.advice
        if not isinstance(advice, Mapping):
            raise TypeError(f"the advice step returned {advice!r}, not a mapping of predictor name to advice")
        return {str(name): str(text) for name, text in advice.items()}


def _give_hints(module: Module, hints: dict[str, str]) -> None:
    """Add the ``hint_`` input, holding its advice as the field's default, to each predictor
    of ``module`` (a per-attempt copy), so the module's own forward need not pass it."""
    for name, predictor in module.named_predictors():
        signature = getattr(predictor, "signature", None)
        if signature is None or HINT_FIELD in signature.input_fields:
            continue
        field = InputField(desc=HINT_DESC, default=hints.get(name, NO_ADVICE))
        predictor.signature = signature.append(HINT_FIELD, field)  # type: ignore[attr-defined]


def describe_predictors(module: Module) -> str:
    """Each predictor's input and output fields (with their descriptions) and instructions."""
    blocks = []
    for name, predictor in module.named_predictors():
        signature = getattr(predictor, "signature", None)
        if signature is None:
            blocks.append(f"{name}: {type(predictor).__name__}")
            continue
        lines = [f"{name}:"]
        for title, fields in (("inputs", signature.input_fields), ("outputs", signature.output_fields)):
            lines.append(f"  {title}:")
            for field_name, spec in fields.items():
                lines.append(f"    - {field_name}" + (f": {spec.desc}" if spec.desc else ""))
        lines.append("  instructions:")
        lines.append(textwrap.indent(signature.instructions.strip() or "(none)", "    "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _fields(value: Any) -> Any:
    to_dict = getattr(value, "toDict", None)
    return to_dict() if callable(to_dict) else value


def _json(value: Any) -> str:
    # default=: a value JSON cannot hold (an image, a custom object) is shown by its repr.
    return json.dumps(value, indent=2, ensure_ascii=False, default=lambda v: f"<{type(v).__name__}: {v!r:.200}>")


def program_code(module: Module) -> str:
    cls = type(module)
    if cls.__module__.startswith("dspex."):
        # dspex's own class: its source is library internals, no help to the advice step.
        return f"a dspex.{cls.__name__}, whose predictors are described below"
    return _source(cls)


def _source(obj: Any) -> str:
    for target in (obj, type(obj)):
        try:
            return inspect.getsource(target)
        except (OSError, TypeError):
            continue
    return f"(source not available: {getattr(obj, '__qualname__', type(obj).__qualname__)})"


__all__ = ["AdviseRetry", "Refine"]
