"""DSPy-style callbacks: handlers told when modules, LMs, adapters and evaluations run.

Subclass `BaseCallback`, override the handlers you need, and pass instances in
``dspex.configure(callbacks=[...])`` (every call), ``dspex.context(callbacks=[...])``
(calls in that context), or a module's ``callbacks=`` (calls of that module)::

    class Printer(dspex.BaseCallback):
        def on_lm_end(self, call_id, outputs, exception):
            print("LM said", outputs)

    dspex.configure(callbacks=[Printer()])

Each call gets a fresh ``call_id`` shared by its start and end handler; while
the call runs (after its start handlers, before its end handlers) that id is
``dspex.utils.callback.ACTIVE_CALL_ID``, so a start handler of a nested call
reads its parent's id there. A start
handler receives the instance and its inputs as a dict (a module call:
``{"args": (...), "kwargs": {...}}``; an LM call: ``{"messages": [...],
"kwargs": {...}}``; an adapter's format: ``signature``, ``demos``, ``inputs``;
its parse: ``signature``, ``completion``; an evaluation: ``program``, ``metric``,
``devset`` and the call's options). An end handler receives the outputs (None
when the call raised) and the exception (None when it returned).

Handlers run inline, in the order given: the settings' callbacks first, then
the instance's. A handler that raises is logged and skipped; the call goes on.

`BaseCallback` itself lives in `dspex.utils.callback` (DSPy's import path), with
the `with_callbacks` decorator that reports any method's calls here.

The dispatch is a call observer (`dspex.observability.hooks`): the core reports
its calls there and knows nothing of callbacks. It is registered the first time
a callback is given anywhere (settings, a module's list), so a program without
callbacks pays nothing for them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self, SupportsIndex

from dspex.observability import hooks
from dspex.primitives.settings import settings
from dspex.utils.callback import BaseCallback
from dspex.utils.callback_context import ACTIVE_CALL_ID

logger = logging.getLogger("dspex.callbacks")


@dataclass(frozen=True, slots=True)
class _Dispatch:
    """One call's callbacks, carried from its start to its end."""

    call_id: str
    kind: str
    callbacks: tuple[Any, ...]
    parent_call_id: str | None


class CallbackDispatcher:
    """The call observer that runs the callbacks active for a call."""

    def call_started(
        self, kind: hooks.CallKind, instance: Any, inputs: dict[str, Any]
    ) -> _Dispatch | None:
        callbacks = active_callbacks(instance)
        if not callbacks:
            return None
        return self.start(kind, instance, inputs, callbacks)

    def start(
        self, kind: str, instance: Any, inputs: dict[str, Any], callbacks: tuple[Any, ...]
    ) -> _Dispatch:
        """Run the start handlers of ``callbacks``, then make the call's id the active one."""
        dispatch = _Dispatch(uuid.uuid4().hex, kind, callbacks, ACTIVE_CALL_ID.get())
        for callback in callbacks:
            _run(callback, f"on_{kind}_start", call_id=dispatch.call_id, instance=instance, inputs=inputs)
        # Set after the start handlers: they read their parent's id, not their own.
        ACTIVE_CALL_ID.set(dispatch.call_id)
        return dispatch

    def call_ended(
        self, dispatch: _Dispatch, outputs: Any, exception: BaseException | None
    ) -> None:
        # set(), not reset(): the end may come in a copy of the start's context (a task
        # or thread), where a token from the start's context is refused.
        ACTIVE_CALL_ID.set(dispatch.parent_call_id)
        for callback in dispatch.callbacks:
            _run(
                callback,
                f"on_{dispatch.kind}_end",
                call_id=dispatch.call_id,
                outputs=outputs,
                exception=exception,
            )


def active_callbacks(instance: Any) -> tuple[Any, ...]:
    """The callbacks for a call of ``instance``: the settings' ones, then its own."""
    own = getattr(instance, "callbacks", None) or ()
    configured = settings.callbacks
    if not configured:
        return tuple(own)
    return (*configured, *own)


def _run(callback: Any, handler_name: str, **arguments: Any) -> None:
    # DSPy passes the arguments by keyword; handlers written for it expect that.
    handler = getattr(callback, handler_name, None)
    if handler is None:
        return  # a duck-typed callback that does not handle this kind of call
    try:
        handler(**arguments)
    except Exception:
        # A broken callback must not break the program it observes.
        logger.exception("dspex: callback %r failed in %s", callback, handler_name)


DISPATCHER = CallbackDispatcher()


def enable() -> None:
    """Register the dispatcher with the call observers (once; later calls do nothing)."""
    hooks.add_call_observer(DISPATCHER)


class CallbackList(list[Any]):
    """A module's ``callbacks``: a list that registers the dispatcher as soon as it holds one.

    So ``module.callbacks.append(cb)`` works like ``Module(callbacks=[cb])``, and a
    program unpickled in another process (a Ray worker) brings its callbacks along.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self._enable_if_any()

    def _enable_if_any(self) -> None:
        if self:
            enable()

    def append(self, item: Any) -> None:
        super().append(item)
        enable()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        super().insert(index, item)
        enable()

    def extend(self, items: Iterable[Any]) -> None:
        super().extend(items)
        self._enable_if_any()

    def __iadd__(self, items: Iterable[Any]) -> Self:  # type: ignore[override,misc]
        super().__iadd__(items)
        self._enable_if_any()
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._enable_if_any()


__all__ = ["BaseCallback", "CallbackDispatcher", "CallbackList", "active_callbacks", "enable"]
