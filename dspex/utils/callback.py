"""DSPy's import path for callbacks: ``from dspex.utils.callback import BaseCallback``.

- `BaseCallback`: the handler base class (the same class as ``dspex.BaseCallback``).
- `ACTIVE_CALL_ID`: the id of the callback-observed call running now (None outside one).
- `with_callbacks`: a decorator that makes any method of a class an observed call, so
  the active callbacks (``dspex.settings.callbacks``, then the instance's own
  ``callbacks``) hear of it. Which handlers run follows the instance: an LM's
  ``on_lm_*``, an Evaluate's ``on_evaluate_*``, an adapter's ``on_adapter_format_*`` or
  ``on_adapter_parse_*`` (by method name), a tool's ``on_tool_*``, anything else
  ``on_module_*``. The start handler gets the call's arguments by parameter name.

dspex's own modules, LMs, adapters and Evaluate are observed already; the decorator
is for user classes and extra methods. Calls are reported through the call observers
(`dspex.observability.hooks`), where `dspex.primitives.callbacks` runs the callbacks
once any callback was given (``configure``/``context(callbacks=...)``, or a
``dspex.Module``'s ``callbacks``); tracing sees them there too.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

from dspex.observability.hooks import call_observers, observe_call
from dspex.utils.callback_context import ACTIVE_CALL_ID

F = TypeVar("F", bound=Callable[..., Any])


class BaseCallback:
    """Base class of callback handlers; every handler does nothing until overridden."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A module (``dspex.Module``, e.g. Predict) is called with ``inputs``."""

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The module call returned ``outputs`` (None if it raised ``exception``)."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM (``instance``) is sent a request: ``inputs["messages"]``, ``inputs["kwargs"]``."""

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The LM answered ``outputs`` (its output texts), or failed with ``exception``."""

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter formats a signature, demos and inputs into chat messages."""

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The adapter produced ``outputs`` (the messages)."""

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter parses one LM reply (``inputs["completion"]``) into output fields."""

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The adapter parsed ``outputs`` (a dict of output fields), or could not."""

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A tool (``instance``) is called with ``inputs`` (its arguments by name)."""

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The tool returned ``outputs``, or failed with ``exception``."""

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An ``Evaluate`` (``instance``) starts on ``inputs["program"]``."""

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """The evaluation ended with ``outputs`` (an ``EvaluationResult``) or ``exception``."""


# (module, class) whose instances get a kind of handler other than on_module_*. Looked up
# in sys.modules only: an instance of a class whose module was never imported cannot
# exist, and this bottom layer must not import the layers above it.
_KINDS: tuple[tuple[str, str, str], ...] = (
    ("dspex.clients.lm", "LM", "lm"),
    ("dspex.clients.base_lm", "BaseLM", "lm"),
    ("dspex.evaluate.evaluate", "Evaluate", "evaluate"),
    ("dspex.adapters.base", "Adapter", "adapter"),
)
_ADAPTER_METHODS = {"format": "adapter_format", "parse": "adapter_parse"}


def with_callbacks(fn: F) -> F:
    """Decorate a method (sync or async) so each call is reported to the active callbacks.

    With nothing observing calls the method runs as is. Otherwise: start handlers, then
    the method with the call's id as `ACTIVE_CALL_ID`, then end handlers with its result
    or the exception it raised (any ``BaseException``, cancellation included; it still
    propagates).
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def observed_async(instance: Any, *args: Any, **kwargs: Any) -> Any:
            if not call_observers:
                return await fn(instance, *args, **kwargs)
            inputs = _inputs(fn, instance, args, kwargs)
            with observe_call(_kind(instance, fn), instance, inputs) as call:  # type: ignore[arg-type]
                outputs = await fn(instance, *args, **kwargs)
                call.finish(outputs)
            return outputs

        return cast(F, observed_async)

    @functools.wraps(fn)
    def observed(instance: Any, *args: Any, **kwargs: Any) -> Any:
        if not call_observers:
            return fn(instance, *args, **kwargs)
        inputs = _inputs(fn, instance, args, kwargs)
        with observe_call(_kind(instance, fn), instance, inputs) as call:  # type: ignore[arg-type]
            outputs = fn(instance, *args, **kwargs)
            call.finish(outputs)
        return outputs

    return cast(F, observed)


def _inputs(fn: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (defaults included), without the instance."""
    try:
        bound = inspect.signature(fn).bind(instance, *args, **kwargs)
    except TypeError:
        # The call itself will raise its usual TypeError; the handlers see what was passed.
        return {"args": args, "kwargs": kwargs}
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    first = next(iter(arguments), None)
    if first is not None:
        arguments.pop(first)
    return arguments


def _kind(instance: Any, fn: Callable[..., Any]) -> str:
    for module_name, class_name, kind in _KINDS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(instance, cls):
            if kind == "adapter":
                return _ADAPTER_METHODS.get(fn.__name__, "module")
            return kind
    # Tools may come from dspex or elsewhere: a class named Tool in the MRO makes one.
    if any(klass.__name__ == "Tool" for klass in type(instance).__mro__):
        return "tool"
    return "module"


__all__ = ["ACTIVE_CALL_ID", "BaseCallback", "with_callbacks"]
