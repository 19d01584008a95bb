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
is for user classes and extra methods.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

from dspex.primitives.callbacks import DISPATCHER, BaseCallback, active_callbacks
from dspex.utils.callback_context import ACTIVE_CALL_ID

F = TypeVar("F", bound=Callable[..., Any])

# (module, class) whose instances get a kind of handler other than on_module_*. Looked up
# in sys.modules only: an instance of a class whose module was never imported cannot
# exist, and importing them here would pull the upper layers into this one.
_KINDS: tuple[tuple[str, str, str], ...] = (
    ("dspex.clients.lm", "LM", "lm"),
    ("dspex.clients.base_lm", "BaseLM", "lm"),
    ("dspex.evaluate.evaluate", "Evaluate", "evaluate"),
    ("dspex.adapters.base", "Adapter", "adapter"),
)
_ADAPTER_METHODS = {"format": "adapter_format", "parse": "adapter_parse"}


def with_callbacks(fn: F) -> F:
    """Decorate a method (sync or async) so each call is reported to the active callbacks.

    With no callback active the method runs as is. Otherwise: start handlers, then the
    method with the call's id as `ACTIVE_CALL_ID`, then end handlers with its result or
    the exception it raised (any ``BaseException``, cancellation included; it propagates).
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def observed_async(instance: Any, *args: Any, **kwargs: Any) -> Any:
            callbacks = active_callbacks(instance)
            if not callbacks:
                return await fn(instance, *args, **kwargs)
            dispatch = DISPATCHER.start(
                _kind(instance, fn), instance, _inputs(fn, instance, args, kwargs), callbacks
            )
            outputs: Any = None
            error: BaseException | None = None
            try:
                outputs = await fn(instance, *args, **kwargs)
                return outputs
            except BaseException as exc:
                error = exc
                raise
            finally:
                DISPATCHER.call_ended(dispatch, outputs, error)

        return cast(F, observed_async)

    @functools.wraps(fn)
    def observed(instance: Any, *args: Any, **kwargs: Any) -> Any:
        callbacks = active_callbacks(instance)
        if not callbacks:
            return fn(instance, *args, **kwargs)
        dispatch = DISPATCHER.start(
            _kind(instance, fn), instance, _inputs(fn, instance, args, kwargs), callbacks
        )
        outputs: Any = None
        error: BaseException | None = None
        try:
            outputs = fn(instance, *args, **kwargs)
            return outputs
        except BaseException as exc:
            error = exc
            raise
        finally:
            DISPATCHER.call_ended(dispatch, outputs, error)

    return cast(F, observed)


def _inputs(fn: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, without the instance itself."""
    try:
        bound = inspect.signature(fn).bind(instance, *args, **kwargs)
    except TypeError:
        # Let the call itself raise its usual TypeError; the handlers see what was passed.
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
    # Tools may come from dspex or from elsewhere: a class named Tool in the MRO is one.
    if any(klass.__name__ == "Tool" for klass in type(instance).__mro__):
        return "tool"
    return "module"


__all__ = ["ACTIVE_CALL_ID", "BaseCallback", "with_callbacks"]
