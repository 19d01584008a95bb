"""ChainOfThought: Predict with a `reasoning` output field before the others."""

from __future__ import annotations

from typing import Any

from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures.field import OutputField
from dspex.signatures.signature import Signature, ensure_signature

REASONING_DESC = "Think it through step by step before answering."


class ChainOfThought(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: Any = None,
        rationale_field_type: type = str,
        **config: Any,
    ) -> None:
        base = ensure_signature(signature)
        field = rationale_field if rationale_field is not None else OutputField(desc=REASONING_DESC)
        self.predict = Predict(base.prepend("reasoning", field, rationale_field_type), **config)

    async def aforward(self, **kwargs: Any) -> Prediction:
        return await self.predict.acall(**kwargs)
