"""Seams where the functional core reports its calls, filled by whoever observes them.

The core (the LM client, modules, adapters, Evaluate) calls these hooks and
knows nothing about who listens; observers register here. This module imports
nothing from dspex, so every layer may use it.

- `lm_request_hooks`: called after every LM request with a secret-free dict
  (model, provider, latency, usage, cached, error, status).
  ``dspex.clients.lm.request_hooks`` is this list; `dspex.observability.instrument`
  adds the hook that turns requests into spans.
- `call_observers`: told when a call starts and ends: a module call, an LM call,
  an adapter's format or parse, a tool, an evaluation (`CallKind`). Tracing spans module
  calls through it; DSPy-style callbacks (`dspex.BaseCallback`) are dispatched
  through it (`dspex.primitives.callbacks`).

An observer that raises is logged and skipped: observing a call never changes
its outcome.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

logger = logging.getLogger("dspex.observability")

CallKind = Literal["module", "lm", "adapter_format", "adapter_parse", "tool", "evaluate"]

LMRequestHook = Callable[[dict[str, Any]], None]

lm_request_hooks: list[LMRequestHook] = []
"""Called after every LM request (see the module docstring). Keep hooks cheap: they run
inline on the request's event loop."""


class CallObserver(Protocol):
    """Something told about calls of the core, e.g. a tracer or a callback dispatcher."""

    def call_started(self, kind: CallKind, instance: Any, inputs: dict[str, Any]) -> Any:
        """A call begins; the returned token is handed to `call_ended` (None: not interested)."""
        ...

    def call_ended(self, token: Any, outputs: Any, exception: BaseException | None) -> None:
        """The call the token came from ended with ``outputs`` or ``exception``."""
        ...


call_observers: list[CallObserver] = []
"""Observers of call starts and ends, in registration order (ends are told in reverse)."""


def add_call_observer(observer: CallObserver) -> None:
    """Register ``observer`` once (a second registration of the same object is a no-op)."""
    if not any(existing is observer for existing in call_observers):
        call_observers.append(observer)


def remove_call_observer(observer: CallObserver) -> None:
    call_observers[:] = [existing for existing in call_observers if existing is not observer]


class ObservedCall:
    """One call as its observers see it: ``with observe_call(...) as call: ...; call.finish(out)``.

    Started observers are told of the end in reverse order, with the exception the
    block raised (then the outputs are None) or what `finish` recorded.
    """

    __slots__ = ("_outputs", "_started")

    def __init__(self, started: Sequence[tuple[CallObserver, Any]]) -> None:
        self._started = started
        self._outputs: Any = None

    def finish(self, outputs: Any) -> None:
        """Record what the call returned (for the observers' end handlers)."""
        self._outputs = outputs

    def __enter__(self) -> ObservedCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outputs = None if exc is not None else self._outputs
        for observer, token in reversed(self._started):
            try:
                observer.call_ended(token, outputs, exc)
            except Exception:
                logger.exception("dspex: call observer %r failed at the end of a call", observer)


class _Unobserved(ObservedCall):
    """The shared stand-in while nobody observes: entering and finishing do nothing."""

    __slots__ = ()

    def finish(self, outputs: Any) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_UNOBSERVED = _Unobserved(())


def observe_call(kind: CallKind, instance: Any, inputs: dict[str, Any]) -> ObservedCall:
    """Tell the observers a call starts; use the result as a context manager around it."""
    if not call_observers:
        return _UNOBSERVED
    started: list[tuple[CallObserver, Any]] = []
    for observer in tuple(call_observers):
        try:
            token = observer.call_started(kind, instance, inputs)
        except Exception:
            logger.exception("dspex: call observer %r failed at the start of a %s call", observer, kind)
            continue
        if token is not None:
            started.append((observer, token))
    return ObservedCall(started) if started else _UNOBSERVED


LMResponseT = TypeVar("LMResponseT")


def observed_lm_call(
    method: Callable[..., Awaitable[LMResponseT]],
) -> Callable[..., Awaitable[LMResponseT]]:
    """Decorate an LM's ``acomplete(messages, **kwargs)`` so its calls are observed as
    ``"lm"`` calls: inputs ``{"messages": ..., "kwargs": ...}``, outputs the response's
    output texts."""

    @functools.wraps(method)
    async def observed(lm: Any, messages: Any, **kwargs: Any) -> LMResponseT:
        if not call_observers:
            return await method(lm, messages, **kwargs)
        with observe_call("lm", lm, {"messages": messages, "kwargs": dict(kwargs)}) as call:
            response = await method(lm, messages, **kwargs)
            call.finish(getattr(response, "outputs", response))
        return response

    return observed


__all__ = [
    "CallKind",
    "CallObserver",
    "LMRequestHook",
    "ObservedCall",
    "add_call_observer",
    "call_observers",
    "lm_request_hooks",
    "observe_call",
    "observed_lm_call",
    "remove_call_observer",
]
