"""`Module`: the base class of dspex programs.

A program subclasses Module and defines ``forward`` (sync) and/or ``aforward``
(async). ``program(...)`` and ``await program.acall(...)`` both work whichever
one it defines; the async path (``aforward`` awaited by ``acall``) is the fast
one, since the sync path blocks a thread per in-flight call and an ``acall`` of
a forward-only module runs it in a worker thread. When a class defines both,
``__call__`` uses ``forward`` and ``acall`` uses ``aforward``; when they come
from different classes, the most derived definition serves both paths.

Every call runs with ``settings.caller_modules`` extended by the module (so
the LM calls made inside it are appended to its ``history``, see
`dspex.clients.history`), and collects the LM usage, per model, that
predictors report with `record_usage` inside it: the Prediction it returns
carries it (``prediction.usage``, ``prediction.get_lm_usage()``).
Call observers (`dspex.observability.hooks`: tracing's module spans, the
callbacks of `dspex.primitives.callbacks`) are told when it starts and ends.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO, TypeVar

from dspex.clients.types import Usage
from dspex.errors import ConfigurationError, SavedFileError, StateMismatchError
from dspex.observability.hooks import observe_call
from dspex.observability.redact import without_secrets
from dspex.primitives import saving
from dspex.primitives.assertions import (
    acall_with_backtracking,
    assert_transform_module,
    backtrack_handler,
    call_with_backtracking,
    in_backtrack_scope,
)
from dspex.primitives.callbacks import CallbackList
from dspex.primitives.parameter import Parameter, deepcopy_attributes
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import SettingsContext, settings
from dspex.privacy import session as privacy

M = TypeVar("M", bound="Module")

logger = logging.getLogger(__name__)

_EMPTY_USAGE = Usage()


# --- usage accounting -----------------------------------------------------


class UsageCollector:
    """Sums the usage recorded while it is the innermost active collector, in total
    and per model.

    Thread-safe: a forward may fan predictor calls out to threads that copy
    its context and so share this collector.
    """

    __slots__ = ("_lock", "by_model", "total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = _EMPTY_USAGE
        self.by_model: dict[str, Usage] = {}

    def add(self, usage: Usage, model: str | None = None) -> None:
        with self._lock:
            self.total = self.total + usage
            # A call that cost nothing (a cache hit) is no usage of its model, as in DSPy.
            if model is not None and usage != _EMPTY_USAGE and _spent_anything(usage):
                previous = self.by_model.get(model)
                self.by_model[model] = usage if previous is None else previous + usage

    def merge(self, other: UsageCollector) -> None:
        """Add what an inner call's collector summed."""
        with other._lock:
            total, by_model = other.total, dict(other.by_model)
        with self._lock:
            self.total = self.total + total
            for model, usage in by_model.items():
                previous = self.by_model.get(model)
                self.by_model[model] = usage if previous is None else previous + usage


def _spent_anything(usage: Usage) -> bool:
    return bool(usage.calls or usage.prompt_tokens or usage.completion_tokens or usage.cost)


_collector: ContextVar[UsageCollector | None] = ContextVar("dspex_usage_collector", default=None)


def record_usage(usage: Usage, model: str | None = None) -> None:
    """Report the usage of one LM call (to ``model``) to the module call(s) it happens in.

    Predictors call this once per LM call; outside any module call it is a no-op.
    """
    collector = _collector.get()
    if collector is not None:
        collector.add(usage, model)


@contextmanager
def collect_usage() -> Iterator[UsageCollector]:
    """Collect usage recorded inside the block; on exit it is also added to the
    enclosing collector, so an outer call sees the usage of its inner calls."""
    parent = _collector.get()
    collector = UsageCollector()
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)
        if parent is not None and (collector.total != _EMPTY_USAGE or collector.by_model):
            parent.merge(collector)


def _attach_usage(result: Any, collector: UsageCollector) -> Any:
    # The call's total covers every predictor inside it, so it replaces what
    # an inner predictor set on the Prediction that the call passes through.
    # Some optimizers' tracing returns (prediction, trace): the prediction gets it.
    prediction = result
    if isinstance(result, tuple) and result and isinstance(result[0], Prediction):
        prediction = result[0]
    if isinstance(prediction, Prediction) and (
        collector.total != _EMPTY_USAGE or collector.by_model
    ):
        prediction.set_usage(collector.total, collector.by_model)
    return result


# --- direct forward calls ------------------------------------------------------

# The module whose call (``module(...)`` / ``acall``) is running its forward right now.
# A forward entered without it was called directly, skipping callbacks, usage and
# caller tracking: worth a warning, as DSPy gives.
_calling_forward_of: ContextVar[Module | None] = ContextVar("dspex_calling_forward_of", default=None)


def _check_direct_call(module: Module) -> None:
    if _calling_forward_of.get() is not module:
        logger.warning(
            "Calling module.forward(...) on %s directly is discouraged: it skips what a call "
            "does (callbacks, usage, tracing). Call the module itself: module(...) or "
            "await module.acall(...)",
            type(module).__name__,
        )


def _warn_on_direct_calls(forward: Any) -> Any:
    if getattr(forward, "_dspex_checks_direct_calls", False):
        return forward

    # The wrapper is a closure, so cloudpickle copies it by value with the user's class
    # (a script's classes travel to Ray workers and into saved programs that way): it
    # must reach the ContextVar only through a module-level function, which pickles by
    # reference, since a ContextVar cannot be pickled.
    @functools.wraps(forward)
    def checked_forward(self: Module, *args: Any, **kwargs: Any) -> Any:
        _check_direct_call(self)
        return forward(self, *args, **kwargs)

    checked_forward._dspex_checks_direct_calls = True  # type: ignore[attr-defined]
    return checked_forward


# --- Module -----------------------------------------------------------------


class Module:
    """Base class for programs: subclass it and define forward and/or aforward."""

    _compiled: bool
    _max_backtracks: int | None
    history: list[dict[str, Any]]
    """The LM calls made inside calls of this module, oldest first (the same entry
    dicts as ``dspex.clients.history.GLOBAL_HISTORY``), at most ``max_history_size``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if inspect.isfunction(forward):
            cls.forward = _warn_on_direct_calls(forward)  # type: ignore[method-assign]

    def __new__(cls: type[M], *args: Any, **kwargs: Any) -> M:
        # Base attributes exist even when a subclass __init__ skips super().__init__().
        obj = super().__new__(cls)
        obj.callbacks = []
        obj._compiled = False
        obj.history = []
        obj._max_backtracks = None  # None: settings.max_backtracks
        return obj

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        self.callbacks = list(callbacks or [])
        self._compiled = False

    @property
    def callbacks(self) -> list[Any]:
        """DSPy-style callbacks for calls of this module (`dspex.BaseCallback`), after the
        ones in ``dspex.settings.callbacks``."""
        return self.__dict__["callbacks"]  # type: ignore[no-any-return]

    @callbacks.setter
    def callbacks(self, value: list[Any] | None) -> None:
        # A CallbackList registers the callback dispatcher once it holds a callback.
        self.__dict__["callbacks"] = CallbackList(value or ())

    # --- calling --------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward or aforward")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward or aforward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program synchronously (forward, or aforward on dspex's event loop)."""
        session = privacy.outermost_session()
        if session is not None:  # redactors configured: the program sees placeholders only
            with session.active():
                args, kwargs = privacy.redact_call(session, args, kwargs)
                return session.restore(self.__call__(*args, **kwargs))
        if in_backtrack_scope():
            return self._call_once(args, kwargs)
        # The outermost call: dspex.Assert/Suggest inside it may ask for its forward again.
        return call_with_backtracking(lambda: self._call_once(args, kwargs), self._max_backtracks)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program asynchronously: aforward if defined, else forward in a thread."""
        session = privacy.outermost_session()
        if session is not None:
            with session.active():
                args, kwargs = privacy.redact_call(session, args, kwargs)
                return session.restore(await self.acall(*args, **kwargs))
        if in_backtrack_scope():
            return await self._acall_once(args, kwargs)
        return await acall_with_backtracking(lambda: self._acall_once(args, kwargs), self._max_backtracks)

    def activate_assertions(self: M, handler: Any = None, **handler_args: Any) -> M:
        """Set how many re-runs this program's ``dspex.Assert``/``Suggest`` checks get
        (``max_backtracks=``; DSPy 2.x's spelling). Checks backtrack without it too."""
        return assert_transform_module(self, handler or backtrack_handler, **handler_args)  # type: ignore[no-any-return]

    def _call_once(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        use_forward, use_aforward = _entry_points(type(self))
        if not use_forward:
            if use_aforward:
                from dspex.utils.aio import run_sync

                return run_sync(self.acall(*args, **kwargs))
            self._missing_forward()
        call = observe_call("module", self, {"args": args, "kwargs": kwargs})
        with call, collect_usage() as collector, self._as_caller():
            token = _calling_forward_of.set(self)
            try:
                result = self.forward(*args, **kwargs)
            finally:
                _calling_forward_of.reset(token)
            result = _attach_usage(result, collector)
            call.finish(result)
        return result

    async def _acall_once(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import asyncio

        use_forward, use_aforward = _entry_points(type(self))
        call = observe_call("module", self, {"args": args, "kwargs": kwargs})
        with call, collect_usage() as collector, self._as_caller():
            if use_aforward:
                result = await self.aforward(*args, **kwargs)
            elif use_forward:
                token = _calling_forward_of.set(self)  # the thread runs in a copy of this context
                try:
                    result = await asyncio.to_thread(self.forward, *args, **kwargs)
                finally:
                    _calling_forward_of.reset(token)
            else:
                self._missing_forward()
            result = _attach_usage(result, collector)
            call.finish(result)
        return result

    def _as_caller(self) -> SettingsContext:
        return settings.context(caller_modules=(*settings.caller_modules, self))

    def _missing_forward(self) -> NoReturn:
        raise NotImplementedError(
            f"{type(self).__name__} defines neither forward(**inputs) nor "
            "async aforward(**inputs); define one of them"
        )

    # --- walking the program --------------------------------------------------

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """Every Parameter in the program with its attribute path, in definition order.

        Walks attributes, lists, tuples and dicts; a parameter reachable twice is
        reported once; sub-modules marked ``_compiled`` are frozen and skipped.
        """
        found: list[tuple[str, Parameter]] = []
        if isinstance(self, Parameter):
            found.append(("self", self))
        _collect_from_module("", self, {id(self)}, found)
        return found

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_predictors(self) -> list[tuple[str, Parameter]]:
        """The predictors: in dspex every Parameter is a predictor."""
        return self.named_parameters()

    def predictors(self) -> list[Parameter]:
        return self.parameters()

    def named_sub_modules(
        self, type_: type | None = None, skip_compiled: bool = False
    ) -> list[tuple[str, Any]]:
        """Modules (or instances of ``type_``) reachable from this one, breadth first.

        The module itself comes first, named ``"self"``; the others are named by
        path as DSPy names them (``self.layers[0]``, ``self.tools[search]``: dict
        keys unquoted). A module reachable by two paths is reported once.
        """
        wanted = type_ or Module
        found: list[tuple[str, Any]] = []
        queue: deque[tuple[str, Any]] = deque([("self", self)])
        seen = {id(self)}
        while queue:
            name, item = queue.popleft()
            if isinstance(item, wanted):
                found.append((name, item))
            for child_name, child in _children(name, item, skip_compiled):
                if id(child) not in seen:
                    seen.add(id(child))
                    queue.append((child_name, child))
        return found

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> None:
        """Print the last ``n`` LM calls made inside this module (see `dspex.inspect_history`)."""
        from dspex.utils.inspect_history import pretty_print_history

        pretty_print_history(self.history, n, file=file)

    # --- copies and LMs -------------------------------------------------------

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # Attribute by attribute so one uncopyable value (an LM holding a lock or
        # a connection pool) is shared instead of failing the whole copy. The LM
        # of a predictor is always shared: it is a client, not learned state.
        # A copy has made no LM calls yet: its history starts empty (and
        # optimizers, which copy programs often, do not copy histories).
        return deepcopy_attributes(self, memo, fresh=_FRESH_ON_COPY)

    def __getstate__(self) -> dict[str, Any]:
        # A pickled program (saved, or shipped to a Ray worker) leaves its call
        # history behind: it is a record of this process's calls, often large.
        state = self.__dict__.copy()
        state.pop("history", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("history", [])
        self.__dict__.setdefault("_compiled", False)
        if "callbacks" not in self.__dict__:
            self.callbacks = []

    def batch(
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
    ) -> Any:
        """This module on each example's inputs, concurrently, results in order (None where
        a call failed; the ``max_errors``-th failure stops the batch). With
        ``return_failed_examples=True``: ``(results, failed_examples, exceptions)``."""
        from dspex.utils.aio import run_sync

        return run_sync(
            self.abatch(
                examples,
                num_threads=num_threads,
                max_errors=max_errors,
                return_failed_examples=return_failed_examples,
                provide_traceback=provide_traceback,
            )
        )

    async def abatch(
        self,
        examples: list[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
    ) -> Any:
        """Async `batch` (on EvalWorkers while the runtime is up, see `dspex.primitives.parallel`)."""
        from dspex.primitives.parallel import batch_runner, call_for, run_parallel

        options = {"num_threads": num_threads, "max_errors": max_errors, "provide_traceback": provide_traceback}
        runner = batch_runner()
        if runner is not None:
            outcome = await runner(self, list(examples), **options)
        else:
            outcome = await run_parallel([call_for(self, example) for example in examples], **options)
        if not return_failed_examples:
            return outcome.results
        failed = [examples[i] for i in outcome.failed]
        return outcome.results, failed, [outcome.exceptions[i] for i in outcome.failed]

    def deepcopy(self: M) -> M:
        """An independent copy; LMs and values that cannot be copied are shared."""
        return copy.deepcopy(self)

    def reset_copy(self: M) -> M:
        """A deep copy with every parameter reset (no demos, no per-predictor LM)."""
        new = self.deepcopy()
        for param in new.parameters():
            param.reset()
        return new

    def set_lm(self, lm: Any) -> None:
        """Use ``lm`` for every predictor in the program."""
        for param in self.predictors():
            param.lm = lm  # type: ignore[attr-defined]

    def get_lm(self) -> Any:
        """The one LM every predictor uses; raises if none is set or they differ."""
        lms = [(name, getattr(param, "lm", None)) for name, param in self.named_predictors()]
        distinct = {id(lm): lm for _, lm in lms}
        if len(distinct) == 1 and lms[0][1] is not None:
            return lms[0][1]
        if not lms or all(lm is None for _, lm in lms):
            raise ConfigurationError(
                f"{type(self).__name__} has no predictor with an LM set; call set_lm(lm) or "
                "rely on dspex.configure(lm=...)"
            )
        names = ", ".join(f"{name}={lm!r}" for name, lm in lms)
        raise ConfigurationError(
            f"{type(self).__name__}'s predictors use different LMs ({names}); there is no "
            "single LM to return"
        )

    # --- state ----------------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """{predictor name: its dump_state()}, with secret-named entries removed.

        ``json_mode=False`` (used for .pkl state) lets predictors keep values JSON
        cannot hold, such as Examples among their demos.
        """
        return {
            name: without_secrets(_dump_parameter(p, json_mode))
            for name, p in self.named_parameters()
        }

    def load_state(self: M, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> M:
        """Load what `dump_state` returned; all or nothing; returns self.

        ``allow_unsafe_lm_state=True``: predictors may rebuild a custom LM class named in
        the state (importing it runs its module: only for files you trust).

        Every predictor must have an entry and every entry a predictor, else
        `StateMismatchError` (also a KeyError). If a predictor rejects its state,
        those already loaded are restored.
        """
        params = dict(self.named_parameters())
        if saving.METADATA_KEY not in params:
            state = {k: v for k, v in state.items() if k != saving.METADATA_KEY}
        _check_state_names(type(self).__name__, params, state)
        previous = {name: param.dump_state() for name, param in params.items()}
        # A state holds an LM's settings, not the LM (nor its key): a rollback puts back
        # the very LM objects the predictors had.
        previous_lms = {name: vars(param)["lm"] for name, param in params.items() if "lm" in vars(param)}
        loaded: list[str] = []
        try:
            trust = {"allow_unsafe_lm_state": True} if allow_unsafe_lm_state else {}
            for name, param in params.items():
                param.load_state(state[name], **trust)
                loaded.append(name)
        except BaseException:
            for name in loaded:
                if name in previous_lms:
                    params[name].lm = previous_lms[name]  # so the reload compares like with like
                params[name].load_state(previous[name])
                if name in previous_lms:
                    params[name].lm = previous_lms[name]
            raise
        return self

    def save(
        self,
        path: str | os.PathLike[str],
        save_program: bool = False,
        modules_to_serialize: list[ModuleType] | None = None,
        *,
        include_lm: bool = False,
    ) -> None:
        """Save learned state to ``x.json`` (or ``x.pkl``), or the whole program to a directory.

        ``x.json``: `dump_state` as JSON, safe to load from anyone. ``x.pkl``: the
        same state pickled, for values JSON cannot hold; loading it needs
        ``allow_pickle=True``.

        ``save_program=True``: ``path`` is a directory that receives
        ``program.pkl`` (cloudpickle) and ``metadata.json``; load it with
        ``dspex.load(path, allow_pickle=True)``. ``modules_to_serialize``: modules
        whose code goes into the pickle (cloudpickle's register_pickle_by_value),
        for classes defined in a module the loading process cannot import.
        Predictors' ``lm`` is set to None in the saved copy unless
        ``include_lm=True`` (the LM's own pickling drops its API key; the save is
        refused if a key still shows up in the pickled bytes).
        """
        target = Path(path)
        if save_program:
            if target.suffix:
                raise ConfigurationError(
                    f"with save_program=True, path must be a directory without a suffix, "
                    f"got {target}"
                )
            secrets = _api_keys(self)
            program = self.deepcopy()
            if not include_lm:
                for param in program.predictors():
                    if hasattr(param, "lm"):
                        param.lm = None  # type: ignore[attr-defined]
            saving.write_program(program, target, secrets, modules_to_serialize)
            return
        _require_state_suffix(target)
        saving.write_state(self.dump_state(json_mode=target.suffix == ".json"), target)

    def load(
        self: M,
        path: str | os.PathLike[str],
        allow_pickle: bool = False,
        *,
        allow_unsafe_lm_state: bool = False,
    ) -> M:
        """Load learned state saved with ``save("x.json")`` (or ``"x.pkl"``) into this
        program; returns self.

        A ``.pkl`` state is a pickle, which runs code when read: it loads only with
        ``allow_pickle=True`` (`PickleNotAllowedError` otherwise). To load a whole
        program saved with ``save_program=True`` use ``dspex.load(directory, ...)``.
        """
        target = Path(path)
        _require_state_suffix(target, loading=True)
        state = saving.read_state(target, allow_pickle=allow_pickle)
        try:
            return self.load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        except StateMismatchError as exc:
            raise StateMismatchError(
                f"{target} does not fit this {type(self).__name__}: {exc}. Was it saved from "
                "a program built the same way (the same class and predictors)?"
            ) from exc
        except ConfigurationError as exc:
            # Name the file: "state does not match" alone leaves a reader guessing which.
            raise SavedFileError(
                f"{target} does not fit this {type(self).__name__}: {exc}. Was it saved from "
                "a program built the same way (the same class and predictors)?"
            ) from exc

    # --- display --------------------------------------------------------------

    def __repr__(self) -> str:
        lines = [
            f"  {name} = {_indent(repr(param))}"
            for name, param in self.named_parameters()
            if param is not self
        ]
        if not lines:
            return f"{type(self).__name__}()"
        return "\n".join([f"{type(self).__name__}(", *lines, ")"])


# --- helpers ----------------------------------------------------------------

_FRESH_ON_COPY: dict[str, Any] = {"history": list}


def _entry_points(cls: type) -> tuple[bool, bool]:
    """Which of forward / aforward a call may use: (forward, aforward).

    Both, when one class defines both. When they are defined at different levels
    of the class hierarchy, only the most derived one: a user subclass that
    overrides ``forward`` of a class defining both must not have ``acall`` run
    the parent's now-stale ``aforward`` (nor the other way round).
    """
    for klass in cls.__mro__:
        if klass is Module:
            break
        has_forward = "forward" in klass.__dict__
        has_aforward = "aforward" in klass.__dict__
        if has_forward or has_aforward:
            return has_forward, has_aforward
    return False, False


def _collect_from_module(
    prefix: str, module: Module, seen: set[int], found: list[tuple[str, Parameter]]
) -> None:
    for attr, value in vars(module).items():
        _collect_parameters(f"{prefix}.{attr}" if prefix else attr, value, seen, found)


def _collect_parameters(
    name: str, value: Any, seen: set[int], found: list[tuple[str, Parameter]]
) -> None:
    # One `seen` set for the whole walk: it stops cycles (a child pointing back
    # at its parent) and reports a shared parameter once, under its first name.
    if id(value) in seen:
        return
    if isinstance(value, Parameter):
        seen.add(id(value))
        found.append((name, value))
    elif isinstance(value, Module):
        seen.add(id(value))
        if not value._compiled:  # a compiled sub-module is frozen
            _collect_from_module(name, value, seen, found)
    elif isinstance(value, (list, tuple)):
        seen.add(id(value))
        for index, item in enumerate(value):
            _collect_parameters(f"{name}[{index}]", item, seen, found)
    elif isinstance(value, dict):
        seen.add(id(value))
        for key, item in value.items():
            # Quoted with ' whatever the key's type, as DSPy names them.
            _collect_parameters(f"{name}['{key}']", item, seen, found)


def _dump_parameter(param: Parameter, json_mode: bool) -> dict[str, Any]:
    # Parameters written for dspex < json_mode (and users' own) take no argument.
    try:
        accepts = "json_mode" in inspect.signature(param.dump_state).parameters
    except (TypeError, ValueError):
        accepts = False
    return param.dump_state(json_mode=json_mode) if accepts else param.dump_state()  # type: ignore[call-arg]


# One step of an attribute path: ".name", "[0]", "['key']", '["key"]' or "[key]".
_PATH_STEP = re.compile(r"""\.?(?P<attr>[A-Za-z_]\w*)|\[(?P<index>-?\d+)\]|\[(?P<quote>['"])(?P<quoted>.*?)(?P=quote)\]|\[(?P<bare>[^\]]*)\]""")


def _path_steps(path: str) -> list[tuple[str, Any]]:
    """``"a.b[0]['k'].c"`` as [("attr", "a"), ("attr", "b"), ("item", 0), ("item", "k"), ...]."""
    steps: list[tuple[str, Any]] = []
    position = 0
    while position < len(path):
        match = _PATH_STEP.match(path, position)
        if match is None or match.end() == position:
            raise ConfigurationError(
                f"cannot read attribute path {path!r} at position {position} ({path[position:]!r}); "
                "use names like 'sub.predictors[0].predict' or \"tools['search']\""
            )
        if match["attr"] is not None:
            steps.append(("attr", match["attr"]))
        elif match["index"] is not None:
            steps.append(("item", int(match["index"])))
        elif match["quote"] is not None:
            steps.append(("item", match["quoted"]))
        else:
            steps.append(("item", match["bare"]))
        position = match.end()
    return steps


def set_attribute_by_name(obj: Any, name: str, value: Any) -> None:
    """Set the attribute or item that ``name`` reaches from ``obj`` to ``value``.

    ``name`` is a path as `Module.named_parameters` / `named_sub_modules` print them
    (without their leading ``self.``): ``"sub.layers[0].predict"``,
    ``"tools['search']"``, ``"tools[search]"``.
    """
    steps = _path_steps(name[5:] if name.startswith("self.") else name)
    if not steps:
        raise ConfigurationError("set_attribute_by_name needs a non-empty attribute path")
    target = obj
    for kind, key in steps[:-1]:
        target = getattr(target, key) if kind == "attr" else target[key]
    kind, key = steps[-1]
    if kind == "attr":
        setattr(target, key, value)
    else:
        target[key] = value


def _children(name: str, item: Any, skip_compiled: bool) -> list[tuple[str, Any]]:
    if isinstance(item, Module):
        if skip_compiled and item._compiled:
            return []
        return [(f"{name}.{attr}", value) for attr, value in vars(item).items()]
    if isinstance(item, (list, tuple)):
        return [(f"{name}[{i}]", value) for i, value in enumerate(item)]
    if isinstance(item, dict):
        return [(f"{name}[{key}]", value) for key, value in item.items()]
    return []


def _check_state_names(owner: str, params: dict[str, Parameter], state: dict[str, Any]) -> None:
    unknown = [name for name in state if name not in params]
    missing = [name for name in params if name not in state]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"no predictor named {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"no state for {', '.join(map(repr, missing))}")
        raise StateMismatchError(
            f"state does not match {owner}: {'; '.join(parts)}. Its predictors are: "
            f"{', '.join(map(repr, params)) or '(none)'}"
        )


def _require_state_suffix(path: Path, *, loading: bool = False) -> None:
    if path.suffix in saving.STATE_SUFFIXES:
        return
    if loading:
        whole = (
            f"{path} holds a whole saved program: load it with dspex.load({str(path)!r}, "
            "allow_pickle=True)"
            if (path / saving.PROGRAM_FILE).is_file()
            else "to load a whole program saved with save(directory, save_program=True), use "
            "dspex.load(directory, allow_pickle=True)"
        )
        raise SavedFileError(
            f"state files end in .json (or .pkl for pickled state): got {path}; {whole}"
        )
    raise ConfigurationError(
        f"state files end in .json (safe, the default to prefer) or .pkl (pickled, for values "
        f"JSON cannot hold): got {path}; to save the whole program use "
        "save(directory, save_program=True)"
    )


def _api_keys(program: Module) -> list[str]:
    """API keys held by LMs reachable as attributes of the program's modules/predictors."""
    holders = [module for _, module in program.named_sub_modules()] + program.predictors()
    return saving.api_keys_in(value for holder in holders for value in vars(holder).values())


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
