"""`MultiChainComparison`: weigh M earlier attempts and settle on one answer (DSPy's API).

``MultiChainComparison(signature, M=3, temperature=0.7)`` builds a predictor whose
signature is ``signature`` with M extra inputs, ``reasoning_attempt_1`` ..
``reasoning_attempt_M``, and a ``rationale`` output before the signature's outputs.
Calling it with ``completions`` (M predictions, or dicts, each with a ``rationale`` or
``reasoning`` and the signature's last output field, e.g. the ``completions`` of a
ChainOfThought called with ``n=M``) plus the signature's inputs shows the LM each
attempt (the first line of its reasoning and of its answer) and asks it to compare them
and give the final answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dspex.errors import ConfigurationError, InputError
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, ensure_signature

RATIONALE_DESC = (
    "compare the attempts: where they agree, where they differ, and which line of "
    "reasoning holds up; then the corrected reasoning that leads to the answer"
)
#: the fields an attempt's reasoning may be under (ChainOfThought's, then DSPy's older name)
_REASONING_KEYS = ("rationale", "reasoning")


def attempt_field(index: int) -> str:
    """The input field that holds attempt ``index`` (from 1)."""
    return f"reasoning_attempt_{index}"


class MultiChainComparison(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        M: int = 3,  # DSPy's name
        temperature: float = 0.7,
        **config: Any,
    ) -> None:
        super().__init__()
        if not isinstance(M, int) or isinstance(M, bool) or M < 1:
            raise ConfigurationError(f"MultiChainComparison(M={M!r}): M is the number of attempts compared, an int >= 1")
        self.M = M
        base = ensure_signature(signature)
        if not base.output_fields:
            raise ConfigurationError(
                f"MultiChainComparison needs a signature with an output field, got {base.signature!r}"
            )
        # The attempts' answers are read from the last output field, as DSPy reads them.
        self.last_key = list(base.output_fields)[-1]
        extended = base
        for index in range(1, M + 1):
            extended = extended.append(
                attempt_field(index),
                InputField(desc=f"attempt #{index} at this task: the reasoning it gave and the answer it reached"),
            )
        extended = extended.prepend("rationale", OutputField(desc=RATIONALE_DESC))
        self.predict = Predict(extended, temperature=temperature, **config)

    async def aforward(self, completions: Iterable[Any], **kwargs: Any) -> Prediction:
        attempts = [self._describe(number, c) for number, c in enumerate(completions, start=1)]
        if len(attempts) != self.M:
            raise InputError(
                f"MultiChainComparison was built for M={self.M} attempts but got {len(attempts)} "
                f"completions; pass exactly {self.M}, or build it with M={len(attempts)}"
            )
        fields = {attempt_field(n): text for n, text in enumerate(attempts, start=1)}
        return await self.predict.acall(**fields, **kwargs)

    def _describe(self, number: int, completion: Any) -> str:
        """One attempt as the LM sees it: the first line of its reasoning and of its answer."""
        if not isinstance(completion, Mapping) and not callable(getattr(completion, "get", None)):
            raise InputError(
                f"completion #{number} is a {type(completion).__name__}; each completion must be "
                f"a Prediction or a dict with a reasoning and {self.last_key!r}"
            )
        reasoning = next((completion.get(k) for k in _REASONING_KEYS if completion.get(k) is not None), None)
        answer = completion.get(self.last_key)
        if reasoning is None or answer is None:
            missing = [
                name
                for name, value in (("'rationale' or 'reasoning'", reasoning), (repr(self.last_key), answer))
                if value is None
            ]
            raise InputError(
                f"completion #{number} has no {' and no '.join(missing)}; MultiChainComparison compares "
                "completions that carry their reasoning and their answer (e.g. the completions of a "
                "ChainOfThought called with n=M)"
            )
        return (
            f"My reasoning: {_first_line(reasoning)} "
            f"The {self.last_key} I reached, though unsure: {_first_line(answer)}"
        )


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.split("\n", 1)[0].strip()


__all__ = ["MultiChainComparison"]
