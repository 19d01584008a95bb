"""OpenTelemetry spans for dspex: module calls, LM requests, optimizer trials.

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())      # plus your exporter
    import dspex.observability as obs
    obs.instrument()                                 # LM requests become spans

Cost when tracing is off. dspex never configures OpenTelemetry and never
imports it by itself. Whether tracing is on is decided once and cached: on when
`instrument(tracer_provider=...)` named a provider, or when OpenTelemetry is
imported and a global tracer provider is set. While it is off, each helper is a
global read that returns one shared no-op context manager. A provider set up
after dspex made its first span is picked up by `instrument()` or `refresh()`.

Spans:

    module <Name>     dspex.module.name
    chat <model>      gen_ai.operation.name, gen_ai.request.model,
                      gen_ai.provider.name, gen_ai.usage.input_tokens,
                      gen_ai.usage.output_tokens, dspex.lm.cached,
                      dspex.lm.status, dspex.lm.cost_usd, error.type
    optimizer.trial   dspex.run_id, dspex.trial.number, dspex.trial.kind,
                      dspex.trial.score, dspex.trial.status

Every span made inside ``run_context(run_id)`` also carries ``dspex.run_id``.

Secrets and content. Attribute names that look secret (``api_key``,
``authorization``, ...) are dropped and string values pass through `redact`, so
no API key reaches a span. Prompts and completions are recorded only when
``DSPEX_TRACE_CONTENT=1`` (read when tracing is resolved), as JSON in
``gen_ai.input.messages`` / ``gen_ai.output.messages``, masked too.

Processes. Configure tracing in every process that should emit spans: Ray
workers and actors are processes of their own.

Hooks. Tracing fills the seams in `dspex.observability.hooks` and imports
nothing above this package: module calls are spanned by a call observer
registered when this module loads (a no-op while tracing is off), LM requests
by the request hook `instrument` adds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from dspex.observability import hooks
from dspex.observability.logs import current_run_id
from dspex.observability.redact import is_secret_name, redact

TRACER_NAME = "dspex"
CONTENT_ENV = "DSPEX_TRACE_CONTENT"

ATTR_MODULE = "dspex.module.name"
ATTR_RUN_ID = "dspex.run_id"
ATTR_TRIAL = "dspex.trial.number"
ATTR_TRIAL_KIND = "dspex.trial.kind"
ATTR_TRIAL_SCORE = "dspex.trial.score"
ATTR_TRIAL_STATUS = "dspex.trial.status"
ATTR_OPERATION = "gen_ai.operation.name"
ATTR_MODEL = "gen_ai.request.model"
ATTR_PROVIDER = "gen_ai.provider.name"
ATTR_INPUT_TOKENS = "gen_ai.usage.input_tokens"
ATTR_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ATTR_INPUT_MESSAGES = "gen_ai.input.messages"
ATTR_OUTPUT_MESSAGES = "gen_ai.output.messages"
ATTR_CACHED = "dspex.lm.cached"
ATTR_STATUS = "dspex.lm.status"
ATTR_COST = "dspex.lm.cost_usd"
ATTR_ERROR_TYPE = "error.type"
TRIAL_SPAN = "optimizer.trial"

_UNRESOLVED: Any = object()
_tracer: Any = _UNRESOLVED  # None: tracing off; otherwise an OpenTelemetry Tracer
_record_content = False
_explicit_provider: Any = None
_open_trial: ContextVar[tuple[str, int, Any] | None] = ContextVar("dspex_trial", default=None)


# --- turning tracing on and off ----------------------------------------------------


def instrument(tracer_provider: Any = None) -> bool:
    """Trace dspex through ``tracer_provider`` (default: the global one); returns whether on.

    Also turns every LM request into a span, through the LM request hooks
    (`dspex.observability.hooks.lm_request_hooks`, alias ``dspex.clients.lm.request_hooks``),
    and makes sure module calls are spanned. Safe to call more than once.
    """
    global _explicit_provider
    _explicit_provider = tracer_provider
    refresh()
    if _on_lm_request not in hooks.lm_request_hooks:
        hooks.lm_request_hooks.append(_on_lm_request)
    hooks.add_call_observer(MODULE_SPANS)
    return _get_tracer() is not None


def uninstrument() -> None:
    """Undo `instrument`: drop the LM request hook and the explicit provider."""
    global _explicit_provider
    while _on_lm_request in hooks.lm_request_hooks:
        hooks.lm_request_hooks.remove(_on_lm_request)
    _explicit_provider = None
    refresh()


def refresh() -> None:
    """Forget the cached decision; the next span checks the configuration again."""
    global _tracer
    _tracer = _UNRESOLVED


def is_enabled() -> bool:
    """Whether dspex spans are being recorded (resolves the configuration if needed)."""
    return _get_tracer() is not None


def _get_tracer() -> Any:
    tracer = _tracer
    return _resolve() if tracer is _UNRESOLVED else tracer


def _resolve() -> Any:
    global _tracer, _record_content
    if _explicit_provider is None and "opentelemetry.trace" not in sys.modules:
        # Nobody can have set a provider without importing OpenTelemetry. Not
        # cached, so a later setup is still seen; the check is one dict lookup.
        return None
    _record_content = os.environ.get(CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")
    _tracer = _make_tracer()
    return _tracer


def _make_tracer() -> Any:
    from opentelemetry import trace

    from dspex import __version__

    provider = _explicit_provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # the API's placeholder: no SDK configured
    return provider.get_tracer(TRACER_NAME, __version__)


# --- scopes ---------------------------------------------------------------------------


class _NoopSpan:
    """Stands in for a span while tracing is off, so callers need no ``if``."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def is_recording(self) -> bool:
        return False


class SpanScope:
    """A span as a context manager, for ``with`` and ``async with``; yields the span."""

    __slots__ = ()

    def __enter__(self) -> Any:
        return _NOOP_SPAN

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        return self.__exit__(exc_type, exc, tb)


_NOOP_SPAN = _NoopSpan()
_NOOP_SCOPE = SpanScope()


class _LiveScope(SpanScope):
    __slots__ = ("_attributes", "_cm", "_name", "_span", "_tracer")

    def __init__(self, tracer: Any, name: str, attributes: Mapping[str, Any]) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes

    def __enter__(self) -> Any:
        # Failures are recorded by us, not by OpenTelemetry, so their messages get redacted.
        self._cm = self._tracer.start_as_current_span(
            self._name,
            attributes=_clean(self._attributes),
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = self._cm.__enter__()
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            _mark_failed(self._span, exc)
        self._cm.__exit__(exc_type, exc, tb)


class _TrialScope(_LiveScope):
    """A trial span that `record_trial_result` can find and annotate."""

    __slots__ = ("_key", "_token")

    def __init__(self, tracer: Any, key: tuple[str, int], attributes: Mapping[str, Any]) -> None:
        super().__init__(tracer, TRIAL_SPAN, attributes)
        self._key = key

    def __enter__(self) -> Any:
        span = super().__enter__()
        self._token = _open_trial.set((*self._key, span))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        _open_trial.reset(self._token)
        super().__exit__(exc_type, exc, tb)


# --- the helpers the hot paths call -----------------------------------------------------


def span(name: str, attributes: Mapping[str, Any] | None = None, /, **kwargs: Any) -> SpanScope:
    """A span named ``name`` (a no-op while tracing is off), for ``with`` or ``async with``."""
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return _NOOP_SCOPE
    return _LiveScope(tracer, name, {**attributes, **kwargs} if attributes else kwargs)


def module_span(module_name: str) -> SpanScope:
    """The span around one call of a dspex module (``Module.acall``/``__call__``)."""
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return _NOOP_SCOPE
    return _LiveScope(tracer, f"module {module_name}", {ATTR_MODULE: module_name})


def lm_span(
    model: str, provider: str, *, messages: Sequence[Any] | None = None, **attributes: Any
) -> SpanScope:
    """A span around one LM request; finish it with `set_lm_result`.

    Not needed when `instrument` is on: the request hook makes these spans already.
    ``messages`` are recorded only with ``DSPEX_TRACE_CONTENT=1``.
    """
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return _NOOP_SCOPE
    found = {**_lm_request_attributes(model, provider), **attributes}
    if _record_content and messages is not None:
        found[ATTR_INPUT_MESSAGES] = _content_json(messages)
    return _LiveScope(tracer, f"chat {model}", found)


def set_lm_result(
    span: Any,
    *,
    usage: Any = None,
    cached: bool | None = None,
    status: int | None = None,
    error: str | None = None,
    outputs: Sequence[str] | None = None,
) -> None:
    """Put an LM request's outcome on the span `lm_span` yielded."""
    if not span.is_recording():
        return
    span.set_attributes(_clean(_lm_result_attributes(usage, cached, status, error), run=False))
    if _record_content and outputs is not None:
        span.set_attribute(ATTR_OUTPUT_MESSAGES, _content_json(outputs))


def trial_span(run_id: str, trial_number: int, **attributes: Any) -> SpanScope:
    """The span around one optimizer trial (proposing and scoring one candidate)."""
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return _NOOP_SCOPE
    found = {ATTR_RUN_ID: run_id, ATTR_TRIAL: trial_number, **attributes}
    return _TrialScope(tracer, (run_id, trial_number), found)


def record_trial_result(
    run_id: str,
    trial_number: int,
    *,
    score: float | None = None,
    error: BaseException | str | None = None,
    kind: str = "trial",
) -> None:
    """A trial's outcome: on its open `trial_span` if there is one, else as a point-in-time span."""
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return
    outcome = {
        ATTR_TRIAL_KIND: kind,
        ATTR_TRIAL_SCORE: score,
        ATTR_TRIAL_STATUS: "failed" if error is not None else "scored",
    }
    open_trial = _open_trial.get()
    if open_trial is not None and open_trial[:2] == (run_id, trial_number):
        target = open_trial[2]
        target.set_attributes(_clean(outcome, run=False))
        if error is not None:
            _mark_failed(target, error)
        return
    now = time.time_ns()
    point = tracer.start_span(
        TRIAL_SPAN,
        attributes=_clean({ATTR_RUN_ID: run_id, ATTR_TRIAL: trial_number, **outcome}),
        start_time=now,
    )
    if error is not None:
        _mark_failed(point, error)
    point.end(end_time=now)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log correlation; None when off."""
    tracer = _tracer
    if tracer is None or tracer is _UNRESOLVED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# --- module calls, through the call observers --------------------------------------------


class _ModuleSpans:
    """A call observer that puts a `module_span` around every module call while tracing is on."""

    def call_started(self, kind: str, instance: Any, inputs: dict[str, Any]) -> SpanScope | None:
        if kind != "module" or _tracer is None:  # the common case: tracing decided off
            return None
        scope = module_span(type(instance).__name__)
        if scope is _NOOP_SCOPE:
            return None
        scope.__enter__()  # current for the call's body: its LM spans become children
        return scope

    def call_ended(self, scope: SpanScope, outputs: Any, exception: BaseException | None) -> None:
        scope.__exit__(None if exception is None else type(exception), exception, None)


MODULE_SPANS = _ModuleSpans()
# Module calls are spanned whenever tracing is on, with or without instrument().
hooks.add_call_observer(MODULE_SPANS)


# --- LM request hook ----------------------------------------------------------------------


def _on_lm_request(event: Mapping[str, Any]) -> None:
    """``request_hooks`` callback: one finished span per request, back-dated by its latency.

    It runs inline on the request's task, so the current span (a module span,
    say) becomes its parent.
    """
    tracer = _tracer if _tracer is not _UNRESOLVED else _resolve()
    if tracer is None:
        return
    end = time.time_ns()
    start = end - int(max(float(event.get("latency") or 0.0), 0.0) * 1e9)
    model = str(event.get("model"))
    found = {
        **_lm_request_attributes(model, str(event.get("provider"))),
        **_lm_result_attributes(
            event.get("usage"), event.get("cached"), event.get("status"), event.get("error")
        ),
    }
    if _record_content:
        # Today's hook events carry no content; use it if a later version adds it.
        if event.get("messages") is not None:
            found[ATTR_INPUT_MESSAGES] = _content_json(event["messages"])
        if event.get("outputs") is not None:
            found[ATTR_OUTPUT_MESSAGES] = _content_json(event["outputs"])
    request_span = tracer.start_span(f"chat {model}", attributes=_clean(found), start_time=start)
    if event.get("error"):
        _mark_failed(request_span, str(event["error"]))
    request_span.end(end_time=end)


def _lm_request_attributes(model: str, provider: str) -> dict[str, Any]:
    return {ATTR_OPERATION: "chat", ATTR_MODEL: model, ATTR_PROVIDER: provider}


def _lm_result_attributes(
    usage: Any, cached: bool | None, status: int | None, error: str | None
) -> dict[str, Any]:
    return {
        ATTR_INPUT_TOKENS: _usage_field(usage, "prompt_tokens"),
        ATTR_OUTPUT_TOKENS: _usage_field(usage, "completion_tokens"),
        ATTR_COST: _usage_field(usage, "cost"),
        ATTR_CACHED: cached,
        ATTR_STATUS: status,
        ATTR_ERROR_TYPE: error,
    }


def _usage_field(usage: Any, name: str) -> Any:
    if usage is None:
        return None
    if isinstance(usage, Mapping):
        return usage.get(name)
    return getattr(usage, name, None)


# --- attribute hygiene ------------------------------------------------------------------------


def _clean(attributes: Mapping[str, Any], *, run: bool = True) -> dict[str, Any]:
    """OpenTelemetry-typed attributes: no None, no secret-named keys, strings redacted."""
    clean = {
        key: _attribute_value(value)
        for key, value in attributes.items()
        if value is not None and not is_secret_name(key)
    }
    run_id = current_run_id() if run else None
    if run_id is not None:
        clean.setdefault(ATTR_RUN_ID, run_id)
    return clean


def _attribute_value(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        return [redact(item) for item in value]
    # OpenTelemetry takes only primitives and homogeneous sequences of them.
    return redact(
        json.dumps(value, default=str) if isinstance(value, Sequence | Mapping) else str(value)
    )


def _content_json(content: Any) -> str:
    return redact(json.dumps(content, default=str, ensure_ascii=False))


def _mark_failed(target: Any, error: BaseException | str) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException) and not isinstance(error, Exception):
        # Cancellation or interrupt: the work was stopped, it did not fail.
        target.set_attribute("dspex.cancelled", True)
        return
    kind = error if isinstance(error, str) else type(error).__qualname__
    message = kind if isinstance(error, str) else redact(str(error))
    target.set_attribute(ATTR_ERROR_TYPE, kind)
    target.add_event("exception", {"exception.type": kind, "exception.message": message})
    target.set_status(Status(StatusCode.ERROR, message))


__all__ = [
    "CONTENT_ENV",
    "SpanScope",
    "current_trace_ids",
    "instrument",
    "is_enabled",
    "lm_span",
    "module_span",
    "record_trial_result",
    "refresh",
    "set_lm_result",
    "span",
    "trial_span",
    "uninstrument",
]
