"""`Assert` and `Suggest`: checks inside a program's forward that send the LM back to fix
what it wrote (backtracking), as DSPy 2.x's assertions did.

``dspex.Assert(ok, "message")`` in a module's ``forward``: when ``ok`` is false, the
outermost module call runs its forward again, and this time the predictor that produced
the failing value (the last predictor call of the run, or the last one inside
``target_module`` when given) sees two extra inputs: ``past_<output>`` for each of its
earlier outputs, and ``feedback``, the messages of the checks it failed. Other
predictors get the same inputs as before, so the LM cache answers them.

After ``max_backtracks`` re-runs (``dspex.settings.max_backtracks``, 2 by default; per
module with ``module.activate_assertions(max_backtracks=N)``) a failing ``Assert`` raises
`AssertionFailedError` carrying every message, and a failing ``Suggest`` logs a warning
and lets the program go on. Outside any module call there is nothing to re-run: an
``Assert`` raises at once and a ``Suggest`` logs.

This is the retry-with-feedback idea `Refine` uses, driven by the program's own checks
instead of a reward: the feedback reaches the predictor as extra input fields, and the
trace of the run that passed replaces those of the runs that failed.

Unlike DSPy 2.x, a program needs no activation step for its checks to backtrack;
``activate_assertions()`` and ``assert_transform_module(program, backtrack_handler)``
are accepted and set how many re-runs are allowed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dspex.errors import AssertionFailedError
from dspex.primitives.settings import settings
from dspex.signatures.field import InputField

logger = logging.getLogger(__name__)

T = TypeVar("T")

FEEDBACK_FIELD = "feedback"
PAST_PREFIX = "past_"
_FEEDBACK_DESC = "checks your earlier answer to this same input failed: fix what they name"
_PAST_DESC = "your earlier {name}, which failed the checks listed in feedback"


@dataclass
class Feedback:
    """What one predictor is told on a re-run: its failed outputs and the checks' messages."""

    past_outputs: dict[str, Any]
    messages: list[str] = field(default_factory=list)


class BacktrackScope:
    """The re-runs of one outermost module call: how many are left and what each
    predictor has been told so far (by ``id``, since predictors need not be hashable)."""

    def __init__(self, max_backtracks: int) -> None:
        self.max_backtracks = max_backtracks
        self.backtracks = 0
        self.messages: list[str] = []
        self.feedback: dict[int, Feedback] = {}

    def can_backtrack(self) -> bool:
        return self.backtracks < self.max_backtracks


class _Backtrack(Exception):
    """A failed check asking the enclosing call to run its forward again (internal: it
    never leaves the outermost module call)."""

    def __init__(self, scope: BacktrackScope, kind: str, message: str, target: Any) -> None:
        super().__init__(f"{kind} failed: {message}")
        self.scope = scope
        self.kind = kind
        self.message = message
        self.target = target


_scope: ContextVar[BacktrackScope | None] = ContextVar("dspex_backtrack_scope", default=None)


# --- the checks -----------------------------------------------------------------------


def Assert(constraint: Any, msg: str = "", target_module: Any = None) -> bool:
    """A hard check: re-run the failing step with ``msg`` as feedback; still failing after
    the allowed re-runs, raise `AssertionFailedError`. Returns True when it holds."""
    return _check("Assert", constraint, msg, target_module)


def Suggest(constraint: Any, msg: str = "", target_module: Any = None) -> bool:
    """A soft check: re-run the failing step with ``msg`` as feedback; still failing after
    the allowed re-runs, log a warning and go on. Returns whether it held."""
    return _check("Suggest", constraint, msg, target_module)


def _check(kind: str, constraint: Any, message: str, target: Any) -> bool:
    if constraint:
        return True
    message = str(message) if message else f"a dspex.{kind} check failed"
    scope = _scope.get()
    if scope is not None and scope.can_backtrack():
        raise _Backtrack(scope, kind, message, target)
    messages = [*(scope.messages if scope is not None else []), message]
    tries = f" after {scope.backtracks} re-run(s)" if scope is not None else ""
    if kind == "Assert":
        raise AssertionFailedError(message, messages=messages, backtracks=scope.backtracks if scope else 0)
    logger.warning("dspex.Suggest failed%s: %s (the program goes on)", tries, message)
    return False


# --- running a call with re-runs --------------------------------------------------------


def in_backtrack_scope() -> bool:
    return _scope.get() is not None


def feedback_for(predictor: Any) -> Feedback | None:
    """The feedback ``predictor`` gets on this re-run, if a check named it."""
    scope = _scope.get()
    if scope is None or not scope.feedback:
        return None
    return scope.feedback.get(id(predictor))


def with_feedback(signature: Any, inputs: dict[str, Any], feedback: Feedback) -> tuple[Any, dict[str, Any]]:
    """``signature`` with the ``past_*`` and ``feedback`` inputs appended, and the inputs
    holding their values."""
    extra: dict[str, Any] = {}
    for name in signature.output_fields:
        if name in feedback.past_outputs:
            past = f"{PAST_PREFIX}{name}"
            if past not in signature.input_fields:
                signature = signature.append(past, InputField(desc=_PAST_DESC.format(name=name)))
            extra[past] = feedback.past_outputs[name]
    if FEEDBACK_FIELD not in signature.input_fields:
        signature = signature.append(FEEDBACK_FIELD, InputField(desc=_FEEDBACK_DESC))
    extra[FEEDBACK_FIELD] = "\n".join(f"- {m}" for m in feedback.messages)
    return signature, {**inputs, **extra}


class _Runs:
    """The bookkeeping shared by the sync and async drivers: one scope, and for each run
    where the trace starts (the failed runs' predictor calls are taken back out)."""

    def __init__(self, max_backtracks: int) -> None:
        self.scope = BacktrackScope(max_backtracks)
        self.own_trace = settings.trace is None  # a run still needs one to find its step
        self.start = 0

    def begin(self) -> Any:
        if self.own_trace:
            return settings.context(trace=[])
        self.start = len(settings.trace)
        return contextlib.nullcontext()

    def failed(self, signal: _Backtrack) -> None:
        """Record what the failing step is told on the next run, and drop this run's trace."""
        trace = settings.trace or []
        calls = trace[self.start :]
        if not self.own_trace:
            del trace[self.start :]
        step = _failing_step(calls, signal.target)
        scope = self.scope
        scope.backtracks += 1
        scope.messages.append(signal.message)
        if step is None:  # no predictor ran: nothing to tell, the re-run just tries again
            return
        predictor, prediction = step
        outputs = {name: prediction.get(name) for name in predictor.signature.output_fields}
        told = scope.feedback.get(id(predictor))
        messages = [*(told.messages if told else []), signal.message]
        scope.feedback[id(predictor)] = Feedback(outputs, messages)


def _failing_step(calls: list[Any], target: Any) -> tuple[Any, Any] | None:
    """The last predictor call of the run inside ``target`` (any predictor when None)."""
    wanted = None if target is None else {id(p) for p in _predictors_of(target)}
    for predictor, _inputs, prediction in reversed(calls):
        if getattr(predictor, "signature", None) is None:
            continue
        if wanted is None or id(predictor) in wanted:
            return predictor, prediction
    return None


def _predictors_of(target: Any) -> Iterable[Any]:
    if isinstance(target, list | tuple):
        for item in target:
            yield from _predictors_of(item)
        return
    if getattr(target, "signature", None) is not None:
        yield target
    predictors = getattr(target, "predictors", None)
    if callable(predictors):
        yield from predictors()


def call_with_backtracking(call_once: Callable[[], T], max_backtracks: int | None = None) -> T:
    """Run ``call_once`` (a module call's body) again while checks inside it ask to."""
    runs = _Runs(settings.max_backtracks if max_backtracks is None else max_backtracks)
    token = _scope.set(runs.scope)
    try:
        while True:
            with runs.begin():
                try:
                    return call_once()
                except _Backtrack as signal:
                    if signal.scope is not runs.scope:
                        raise
                    runs.failed(signal)
    finally:
        _scope.reset(token)


async def acall_with_backtracking(
    call_once: Callable[[], Awaitable[T]], max_backtracks: int | None = None
) -> T:
    """`call_with_backtracking` for an async module call."""
    runs = _Runs(settings.max_backtracks if max_backtracks is None else max_backtracks)
    token = _scope.set(runs.scope)
    try:
        while True:
            with runs.begin():
                try:
                    return await call_once()
                except _Backtrack as signal:
                    if signal.scope is not runs.scope:
                        raise
                    runs.failed(signal)
    finally:
        _scope.reset(token)


# --- DSPy 2.x's activation API ----------------------------------------------------------


def backtrack_handler(func: Callable[..., Any], bypass_suggest: bool = True, max_backtracks: int = 2) -> Callable[..., Any]:
    """Wrap a forward so checks inside it get ``max_backtracks`` re-runs (DSPy 2.x's
    handler; ``bypass_suggest`` is accepted for compatibility)."""
    del bypass_suggest
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def abacktracking(*args: Any, **kwargs: Any) -> Any:
            return await acall_with_backtracking(lambda: func(*args, **kwargs), max_backtracks)

        return abacktracking

    @functools.wraps(func)
    def backtracking(*args: Any, **kwargs: Any) -> Any:
        return call_with_backtracking(lambda: func(*args, **kwargs), max_backtracks)

    return backtracking


def assert_transform_module(module: Any, assertion_handler: Callable[..., Any] = backtrack_handler, **handler_args: Any) -> Any:
    """Set how many re-runs ``module``'s checks get (DSPy 2.x's spelling); returns it.

    ``assertion_handler`` may be ``backtrack_handler`` or a ``functools.partial`` of it
    (``partial(backtrack_handler, max_backtracks=1)``)."""
    keywords = dict(getattr(assertion_handler, "keywords", None) or {})
    keywords.update(handler_args)
    module._max_backtracks = int(keywords.get("max_backtracks", settings.max_backtracks))
    return module


DSPyAssertionError = AssertionFailedError  # DSPy 2.x's name

__all__ = [
    "Assert",
    "AssertionFailedError",
    "DSPyAssertionError",
    "Suggest",
    "assert_transform_module",
    "backtrack_handler",
]
