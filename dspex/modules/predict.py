"""Predict: one LM step through a signature. The building block of every program.

``Predict(signature, **config)`` holds the learnable state of the step (its
signature's instructions and its demos) and, per call, formats the inputs with
the active adapter, calls the LM, and returns a `Prediction`. Each call is
recorded in the active trace so optimizers can turn good runs into demos.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from dspex.adapters.base import Adapter, AdapterResult
from dspex.adapters.chat import ChatAdapter
from dspex.clients.budget import ONE_CALL, Claim, active_budget
from dspex.clients.types import Usage
from dspex.errors import AdapterParseError, ConfigurationError, InputError
from dspex.primitives.example import Example
from dspex.primitives.module import Module, record_usage
from dspex.primitives.parameter import Parameter
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import record_trace, settings
from dspex.signatures.signature import Signature, ensure_signature

_DEFAULT_ADAPTER = ChatAdapter()
#: below this, n > 1 completions would all come out the same
_MIN_SAMPLING_TEMPERATURE = 0.15


class Predict(Module, Parameter):
    def __init__(self, signature: str | type[Signature], callbacks: list[Any] | None = None, **config: Any) -> None:
        self.signature = ensure_signature(signature)
        self.config = config
        self.callbacks = callbacks or []
        self.demos: list[Any] = []
        self.lm: Any = None

    # --- calling -----------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        _reject_positional(args, self.signature)
        return super().__call__(**kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        _reject_positional(args, self.signature)
        return await super().acall(**kwargs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        signature = ensure_signature(kwargs.pop("signature", self.signature))
        demos = kwargs.pop("demos", self.demos)
        lm = kwargs.pop("lm", None) or self.lm or settings.lm
        config = {**self.config, **kwargs.pop("config", {})}
        inputs = _check_inputs(signature, kwargs)
        if lm is None:
            raise ConfigurationError(
                "no LM is configured: call dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')), "
                "pass lm= to this call, or set predictor.lm"
            )
        config = _sampling_config(config, lm)
        adapter: Adapter = settings.adapter or _DEFAULT_ADAPTER
        result = await _call_within_budget(lm, adapter.acall(lm, config, signature, demos, inputs))
        prediction = Prediction.from_completions(result.completions, signature=signature)
        prediction.usage = result.usage
        record_usage(result.usage)
        record_trace(self, inputs, prediction)
        return prediction

    # --- learnable state -----------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        return {
            "signature": self.signature.dump_state(),
            "demos": [_demo_dict(d) for d in self.demos],
            "lm": self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if "signature" in state:
            self.signature = self.signature.load_state(state["signature"])
        self.demos = [Example(**d) if isinstance(d, Mapping) else d for d in state.get("demos", [])]

    def reset(self) -> None:
        self.demos = []
        self.lm = None

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    def update_config(self, **config: Any) -> None:
        self.config = {**self.config, **config}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature!r}, demos={len(self.demos)})"


async def _call_within_budget(
    lm: Any, call: Coroutine[Any, Any, AdapterResult]
) -> AdapterResult:
    # dspex's LM reserves each HTTP request it sends (retries and cache hits
    # included, see dspex.clients.lm); another LM object is reserved here, one
    # call per predictor call, settled to the calls its usage reports.
    budget = active_budget()
    if budget is None or getattr(lm, "reserves_budget", False):
        return await call
    try:
        reservation = budget.reserve(ONE_CALL)
    except BaseException:
        call.close()
        raise
    try:
        result = await call
    except AdapterParseError as exc:
        reservation.settle(_spent(exc.usage or Usage(calls=1)))
        raise
    except BaseException:
        reservation.settle(ONE_CALL)
        raise
    reservation.settle(_spent(result.usage))
    return result


def _spent(usage: Usage) -> Claim:
    return Claim(usage.calls, usage.cost or 0.0)


def _reject_positional(args: tuple[Any, ...], signature: Any) -> None:
    if args:
        names = ", ".join(f"{n}=..." for n in signature.input_fields)
        raise InputError(
            f"predictors take keyword arguments only; call it as predictor({names})"
        )


def _check_inputs(signature: Any, given: dict[str, Any]) -> dict[str, Any]:
    missing = [name for name in signature.input_fields if name not in given]
    if missing:
        raise InputError(
            f"missing input field(s) {missing} for signature {signature.signature!r}; "
            f"got {sorted(given)}"
        )
    unexpected = [name for name in given if name not in signature.input_fields]
    if unexpected:
        raise InputError(
            f"unexpected input(s) {unexpected} for signature {signature.signature!r}; "
            "pass only its input fields (use config= for LM parameters)"
        )
    return given


def _sampling_config(config: dict[str, Any], lm: Any) -> dict[str, Any]:
    n = config.get("n", 1)
    if n > 1:
        temperature = config.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
        if temperature is None or temperature <= _MIN_SAMPLING_TEMPERATURE:
            config = {**config, "temperature": 0.7}
    return config


def _demo_dict(demo: Any) -> dict[str, Any]:
    if isinstance(demo, Example):
        return demo.toDict()
    return dict(demo)
