"""Predict: one LM step through a signature. The building block of every program.

``Predict(signature, **config)`` holds the learnable state of the step (its
signature's instructions and its demos) and, per call, formats the inputs with
the active adapter, calls the LM, and returns a `Prediction`. Each call is
recorded in the active trace so optimizers can turn good runs into demos.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import typing
import warnings
from collections.abc import Coroutine, Mapping
from typing import Any

from pydantic import ValidationError

from dspex.adapters.base import Adapter, AdapterResult
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.types.base import with_typed_media
from dspex.adapters.values import validator_for
from dspex.clients.base_lm import LM_CLASS_STATE_KEY
from dspex.clients.budget import ONE_CALL, Claim, active_budget
from dspex.clients.lm import LM, parse_model
from dspex.clients.streaming import active_router, streaming_to
from dspex.clients.types import Usage
from dspex.clients.usage import record_usage as record_tracked_usage
from dspex.errors import AdapterParseError, ConfigurationError, InputError, StateMismatchError
from dspex.primitives.assertions import feedback_for, with_feedback
from dspex.primitives.example import Example
from dspex.primitives.module import Module, record_usage
from dspex.primitives.parameter import Parameter
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import record_trace, settings
from dspex.signatures.signature import Signature, ensure_signature
from dspex.signatures.types import type_name

_DEFAULT_ADAPTER = ChatAdapter()
#: below this, n > 1 completions would all come out the same
_MIN_SAMPLING_TEMPERATURE = 0.15
#: LM settings a saved file never sets: where requests go, what key and transport they use
_ENDPOINT_KEYS = frozenset({"api_base", "base_url", "api_key", "transport"})


logger = logging.getLogger(__name__)


class Predict(Module, Parameter):
    def __init__(self, signature: str | type[Signature], callbacks: list[Any] | None = None, **config: Any) -> None:
        self.signature = ensure_signature(signature)
        self.config = config
        self.callbacks = callbacks or []
        self.demos: list[Any] = []
        self.lm: Any = None
        self.traces: list[Any] = []
        self.train: list[Any] = []

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
        if settings.warn_on_type_mismatch:
            _warn_on_type_mismatch(signature, inputs)
        if lm is None:
            raise ConfigurationError(
                "no LM is configured: call dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')), "
                "pass lm= to this call, or set predictor.lm"
            )
        config = _with_rollout_id(_sampling_config(config, lm), lm)
        adapter: Adapter = settings.adapter or _DEFAULT_ADAPTER
        lm_signature, lm_inputs = signature, inputs
        feedback = feedback_for(self)
        if feedback is not None:  # a re-run asked for by a failed dspex.Assert/Suggest
            lm_signature, lm_inputs = with_feedback(signature, inputs, feedback)
        router = active_router()
        if router is None:
            result = await _call_within_budget(lm, adapter.arun(lm, config, lm_signature, demos, lm_inputs))
        else:  # a streamed run (dspex.streamify): answers stream to this predictor's listeners
            sink = router.sink_for(self)
            with streaming_to(sink):
                result = await _call_within_budget(lm, adapter.arun(lm, config, lm_signature, demos, lm_inputs))
            if sink is not None:
                await sink.end()
        prediction = Prediction.from_completions(result.completions, signature=signature)
        model = _answering_model(lm, result.model)
        prediction.set_usage(result.usage, {model: result.usage} if _spent(result.usage).calls else {})
        record_usage(result.usage, model)
        if not getattr(lm, "records_usage", False):
            # dspex's LM adds each request to the active usage trackers itself; any
            # other LM object is reported here, once per predictor call.
            record_tracked_usage(model, result.usage, cached=not _spent(result.usage).calls)
        record_trace(self, inputs, prediction)
        return prediction

    # --- learnable state -----------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """Signature, demos and LM settings (never its key or endpoint).

        ``json_mode=False`` (for .pkl state) keeps demos as they are (Examples stay
        Examples) instead of plain dicts.
        """
        state: dict[str, Any] = {
            "signature": self.signature.dump_state(),
            "demos": [_demo_dict(d) if json_mode else copy.copy(d) for d in self.demos],
            "lm": self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None,
        }
        if isinstance(self.lm, LM):
            # Not the endpoint itself (it is kept out of saved programs), a digest of it:
            # enough for load_state to tell that the LM now points somewhere else.
            state["lm_endpoint"] = _endpoint_digest(self.lm.api_base)
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> Predict:
        """Restore signature, demos and LM (model and request settings) from `dump_state`;
        returns self.

        Demos come back as stored: plain dicts from a JSON state (as DSPy gives them),
        whatever was pickled from a .pkl one; values of fields typed as images (or
        lists of them, or models holding them: `dspex.Image`, `dspex.Audio`,
        `dspex.File`) become those values again. A state without ``signature`` raises
        `StateMismatchError` (also a KeyError) and changes nothing.

        The LM's endpoint and key never come from the saved state: the restored LM keeps
        those of the LM this predictor has now (when it is an LM of the same provider),
        else it uses the provider's default endpoint and key from the environment. A
        warning says when that endpoint differs from the one the state was saved with.
        """
        if not isinstance(state, Mapping) or "signature" not in state:
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise StateMismatchError(
                f"the saved state of a {type(self).__name__} has no 'signature' entry (found "
                f"{found}); it was not written by dump_state()/save()"
            )
        signature = self.signature.load_state(state["signature"])
        demos = [dict(d) if isinstance(d, Mapping) and not isinstance(d, Example) else d
                 for d in state.get("demos", [])]
        # Images (and other content-part values) were saved as their URL or data URI:
        # they load back as the values they were, by the signature's field types.
        demos = [_with_media(signature, d) for d in demos]
        lm = self.lm
        if "lm" in state:  # every state dump_state writes has it; hand-made ones may not
            lm = _restore_lm(state["lm"], state.get("lm_endpoint"), self.lm, allow_unsafe_lm_state)
        self.signature = signature
        self.demos = demos
        self.lm = lm
        return self

    def reset(self) -> None:
        """Forget what was learned or set: demos, the predictor's LM, traces, train."""
        self.demos = []
        self.lm = None
        self.traces = []
        self.train = []

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


def _model_name(lm: Any) -> str:
    model = getattr(lm, "model", None)
    return model if isinstance(model, str) and model else type(lm).__name__


def _answering_model(lm: Any, answered_by: str | None) -> str:
    """The model the usage belongs to: the LM's, or the fallback's that answered for it."""
    if answered_by and getattr(lm, "fallbacks", None):
        return answered_by
    return _model_name(lm)


def _spent(usage: Usage) -> Claim:
    return Claim(usage.calls, usage.cost or 0.0)


def _reject_positional(args: tuple[Any, ...], signature: Any) -> None:
    if args:
        names = ", ".join(f"{n}=..." for n in signature.input_fields)
        raise InputError(
            f"predictors take keyword arguments only; call it as predictor({names})"
        )


def _check_inputs(signature: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The inputs the adapter formats, as DSPy treats them: an input the signature does
    not have is dropped with a warning; a missing one takes its field's default, is
    None when its type allows None, and is otherwise left out with a warning (the LM
    then answers without it)."""
    unexpected = [name for name in given if name not in signature.input_fields]
    if unexpected:
        logger.warning(
            "inputs %s are not in signature %r: they are ignored (LM parameters go in config=)",
            unexpected,
            signature.signature,
        )
    inputs = {name: value for name, value in given.items() if name in signature.input_fields}
    missing = []
    for name, spec in signature.input_fields.items():
        if name in inputs:
            continue
        if not spec.info.is_required():
            inputs[name] = spec.info.get_default(call_default_factory=True)
        elif _allows_none(spec.annotation):
            inputs[name] = None
        else:
            missing.append(name)
    if missing:
        logger.warning(
            "the call gives no value for input field(s) %s of signature %r (present: %s); "
            "the LM answers without them. Missing: %s",
            missing,
            signature.signature,
            sorted(inputs),
            missing,
        )
    return inputs


def _allows_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation)


def _warn_on_type_mismatch(signature: Any, inputs: dict[str, Any]) -> None:
    """Log (not raise) when an input does not validate as its field's type: the prompt
    still renders it, but the program probably passed the wrong thing."""
    for name, value in inputs.items():
        spec = signature.input_fields[name]
        # A str field renders any value as text, as DSPy accepts it: no warning there.
        if value is None or not spec.typed or spec.annotation in (Any, str):
            continue
        try:
            # Strict: "3" is not an int here, though the adapter would render it fine.
            validator_for(spec.annotation).validate_python(value, strict=True)
        except ValidationError:
            logger.warning(
                "Type mismatch for field '%s': expected %s (signature %s), got a %s: %.200r. "
                "Set warn_on_type_mismatch=False to silence this",
                name, type_name(spec.annotation), signature.__name__, type(value).__name__, value,
            )
        except Exception:  # a type pydantic cannot check (an arbitrary class): no opinion
            continue


def _sampling_config(config: dict[str, Any], lm: Any) -> dict[str, Any]:
    n = config.get("n", 1)
    if n > 1:
        temperature = config.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
        if temperature is None or temperature <= _MIN_SAMPLING_TEMPERATURE:
            config = {**config, "temperature": 0.7}
    return config


def _with_rollout_id(config: dict[str, Any], lm: Any) -> dict[str, Any]:
    # `dspex.context(rollout_id=...)` gives every predictor call in its scope a cache
    # entry of its own (a distinct rollout), unless the call, the predictor's config or
    # the LM itself names a rollout_id: the nearer one wins.
    rollout_id = settings.rollout_id
    if rollout_id is None or "rollout_id" in config or getattr(lm, "rollout_id", None) is not None:
        return config
    return {**config, "rollout_id": rollout_id}


def _endpoint_digest(api_base: str | None) -> str:
    """A short digest of an LM's endpoint (None: the provider's default)."""
    return hashlib.sha256((api_base or "").rstrip("/").encode()).hexdigest()[:16]


def _restore_lm(saved: Any, saved_endpoint: Any, current: Any, allow_custom_class: bool = False) -> Any:
    """The LM a predictor gets from its saved ``lm`` state (None stays None).

    A state naming an LM class other than `dspex.LM` (a `BaseLM` subclass) is rebuilt with
    that class's ``load_state`` only when the caller trusts the file
    (``allow_unsafe_lm_state=True``): importing a class named in a file runs its module."""
    if saved is None:
        return None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("model"), str):
        raise ConfigurationError(
            f"the saved 'lm' must be null or an object with a 'model' string, got {saved!r:.200}"
        )
    saved = dict(saved)
    class_path = saved.pop(LM_CLASS_STATE_KEY, None)
    if class_path is not None and class_path != _LM_CLASS_PATH:
        return _custom_lm(str(class_path), saved, allow_custom_class)
    ignored = sorted(_ENDPOINT_KEYS.intersection(saved))
    if ignored:
        warnings.warn(
            f"the saved LM state sets {', '.join(ignored)}; ignored: a saved file never chooses "
            "where requests go or the key they carry. Give them to dspex.LM(...) in code",
            UserWarning,
            stacklevel=4,
        )
    config = {k: v for k, v in saved.items() if k not in _ENDPOINT_KEYS}
    provider, _ = parse_model(config["model"])  # ConfigurationError for an unknown provider
    if isinstance(current, LM) and current.provider == provider:
        # Keep the endpoint, key and transport given in code; take everything else from
        # the state, including dropping request settings the state does not have.
        dropped = {name: None for name in current.kwargs if name not in config}
        restored = current.copy(**config, **dropped)
    else:
        restored = LM.from_state(config)
    if isinstance(saved_endpoint, str) and saved_endpoint != _endpoint_digest(restored.api_base):
        warnings.warn(
            f"the LM {restored.model!r} was saved with another endpoint (api_base) than the one "
            f"it has now ({'from the LM set in code' if restored.api_base else 'the provider default'}). "
            "Endpoints are not loaded from files: if the program should call the endpoint it "
            "was optimized against, set predictor.lm = dspex.LM(..., api_base=...) in code",
            UserWarning,
            stacklevel=4,
        )
    return restored


_LM_CLASS_PATH = f"{LM.__module__}.{LM.__qualname__}"


def _custom_lm(class_path: str, state: dict[str, Any], allowed: bool) -> Any:
    if not allowed:
        raise ConfigurationError(
            f"this saved state's LM is a {class_path}, a class dspex would have to import to "
            "rebuild it, which runs that module's code; load it with "
            "load_state(..., allow_unsafe_lm_state=True) only if you trust the file, or set "
            "predictor.lm in code"
        )
    import importlib

    target: Any = None
    # A nested class (Outer.Inner): import the longest importable module prefix, then walk.
    parts = class_path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        break
    if target is None or not isinstance(target, type):
        raise ConfigurationError(f"the saved LM class {class_path!r} cannot be imported here")
    loader = getattr(target, "load_state", None)
    return loader(state) if callable(loader) else target(**state)


def _with_media(signature: Any, demo: Any) -> Any:
    if not isinstance(demo, dict):
        return demo
    return dict(with_typed_media(signature.fields, demo, strict=False))


def _demo_dict(demo: Any) -> dict[str, Any]:
    """A demo as JSON-ready data (pydantic values dumped: dates and URLs as text)."""
    from dspex.primitives.saving import serialize_object

    fields = demo.toDict() if isinstance(demo, Example) else dict(demo)
    return dict(serialize_object(fields))
