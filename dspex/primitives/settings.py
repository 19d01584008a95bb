"""Settings: process-wide defaults with per-context overrides.

``settings.lm`` reads the effective value: the innermost `context(...)` override
active in the current context (task or thread), else the process-wide default
set with `configure(...)`.

- `configure(**kw)` changes the defaults for every thread and task (copy on
  write under a lock, so a reader never sees a half-applied update). As in
  DSPy, only the thread that configured first may configure again, and inside
  asyncio only the task that configured first: other threads and tasks use
  `context`. A thread or task that has ended hands the role on to the next
  caller (so one test, notebook cell or request after another may configure).
- `settings.save(path)` / `load_settings(path, allow_pickle=True)` keep the
  effective settings in a cloudpickle file (API keys never written).
- `context(**kw)` overrides values in a `contextvars.ContextVar`. An asyncio
  task gets a copy of its creator's context, so overrides made inside one task
  of an ``asyncio.gather`` are invisible to its siblings. A new thread starts
  with an empty context: it sees only the defaults unless it is started through
  ``contextvars.copy_context().run`` (``asyncio.to_thread`` does this).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from pathlib import Path
from types import MappingProxyType, ModuleType, TracebackType
from typing import Any

from dspex.clients import history
from dspex.errors import (
    ConfigurationError,
    PickleNotAllowedError,
    SavedFileError,
    SettingsOwnerError,
    UnknownSettingError,
)
from dspex.privacy import redactors as privacy_redactors
from dspex.privacy import session as privacy_session
from dspex.utils import usage_tracker


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# name -> default value. Every one is read by dspex:
#   lm, adapter, callbacks           by predictors (`dspex.modules.predict`)
#   trace, max_trace_size            by `record_trace` below
#   num_threads, max_errors          by Evaluate and the optimizers
#   caller_modules                   by `Module.__call__`
#   disable_history, max_history_size  by the LM history (`dspex.clients.history`), via the hook below
#   usage_tracker                    by LM usage recording (`dspex.clients.usage`), via the hook below
#   rollout_id                       by predictors, which pass it to the LM as its cache salt
#   track_usage                      by `Prediction.get_lm_usage` (False: None, as in DSPy;
#                                    prediction.usage is kept either way, it costs nothing)
#   callbacks                        by `dspex.primitives.callbacks`
#   max_backtracks                   by `dspex.primitives.assertions` (Assert/Suggest re-runs)
#   rm                               by `dspex.Retrieve` (`dspex.modules.retrieve`): the retriever
#   redactors                        by `dspex.privacy` (module calls and the LM client, via the hook
#                                    below): personal data replaced by placeholders before requests
DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "lm": None,
        "adapter": None,
        "rm": None,
        "trace": [],
        "max_trace_size": 10_000,
        "track_usage": True,
        "callbacks": [],
        "num_threads": 16,
        "max_errors": 10,
        "disable_history": False,
        "max_history_size": 10_000,
        "usage_tracker": None,
        "caller_modules": (),
        "rollout_id": None,
        # log a warning when a predictor's input value does not fit its field's type
        "warn_on_type_mismatch": True,
        # re-runs of a module call that dspex.Assert/Suggest checks inside it may ask for
        "max_backtracks": 2,
        # dspex.privacy redactors: personal data in prompts becomes <KIND_n> placeholders
        "redactors": [],
    }
)

# Names that were settings (or look like one) but are not: what to do instead.
_NOT_SETTINGS: dict[str, str] = {
    "cache_dir": (
        "set the LM cache's directory with dspex.configure_cache(disk_dir=...), or the "
        "DSPEX_CACHE_DIR environment variable (give it to Ray workers through runtime_env)"
    ),
    "runtime": (
        "start or attach to the actor runtime with dspex.init(address=...) and stop it "
        "with dspex.shutdown()"
    ),
}

# name -> (check, what the value must be). Keys without an entry accept anything.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "trace": (lambda v: v is None or isinstance(v, list), "a list or None"),
    "max_trace_size": (lambda v: _is_int(v, 0), "an int >= 0"),
    "track_usage": (lambda v: isinstance(v, bool), "a bool"),
    "callbacks": (lambda v: isinstance(v, list), "a list (or None for none)"),
    "num_threads": (lambda v: _is_int(v, 1), "an int >= 1"),
    "max_errors": (lambda v: v is None or _is_int(v, 0), "an int >= 0 or None"),
    "disable_history": (lambda v: isinstance(v, bool), "a bool"),
    "max_history_size": (lambda v: _is_int(v, 0), "an int >= 0"),
    "usage_tracker": (
        lambda v: v is None or callable(getattr(v, "add_usage", None)),
        "None or a usage tracker (dspex.utils.usage_tracker.UsageTracker)",
    ),
    "warn_on_type_mismatch": (lambda v: isinstance(v, bool), "a bool"),
    "max_backtracks": (lambda v: _is_int(v, 0), "an int >= 0"),
    "rollout_id": (
        lambda v: v is None or (isinstance(v, int | str) and not isinstance(v, bool)),
        "an int, a str or None",
    ),
    "caller_modules": (lambda v: isinstance(v, tuple), "a tuple"),
    "redactors": (
        privacy_redactors.check_redactors,
        "a list of redactors: dspex.privacy.EMAIL and the other built-ins, "
        "dspex.privacy.regex(pattern, kind), a compiled regex, or a callable text -> "
        "[(start, end, kind), ...]",
    ),
    "rm": (
        lambda v: v is None or callable(v),
        "None or a retriever called as rm(query, k=...) (dspex.ColBERTv2, "
        "dspex.retrievers.Embeddings, or a function)",
    ),
}

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})
_overrides: ContextVar[MappingProxyType[str, Any]] = ContextVar(
    "dspex_settings_overrides", default=_EMPTY
)
_defaults: MappingProxyType[str, Any] = MappingProxyType(
    {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}
)
_defaults_lock = threading.Lock()


def _unknown(name: str) -> UnknownSettingError:
    instead = _NOT_SETTINGS.get(name)
    if instead is not None:
        return UnknownSettingError(f"{name!r} is not a dspex setting: {instead}")
    return UnknownSettingError(
        f"unknown setting {name!r}; valid settings are: {', '.join(sorted(DEFAULTS))}"
    )


def _normalized(values: dict[str, Any]) -> dict[str, Any]:
    # DSPy accepts callbacks=None for "no callbacks"; readers here always get a list.
    if "callbacks" in values and values["callbacks"] is None:
        values = {**values, "callbacks": []}
    if "redactors" in values and values["redactors"] is None:
        values = {**values, "redactors": []}
    return values


def validate(values: dict[str, Any]) -> None:
    """Raise ConfigurationError for an unknown key or an ill-typed value."""
    for name, value in values.items():
        if name not in DEFAULTS:
            raise _unknown(name)
        check = _CHECKS.get(name)
        if check is not None and not check[0](value):
            raise ConfigurationError(
                f"setting {name!r} must be {check[1]}, got {value!r} ({type(value).__name__})"
            )


def _load_callback_dispatch(values: dict[str, Any]) -> None:
    """Callbacks given here need their dispatcher among the call observers; it is
    registered on first use, so programs without callbacks pay nothing for them."""
    if values.get("callbacks"):
        from dspex.primitives import callbacks

        callbacks.enable()


class SettingsContext:
    """Overrides settings for the current context while active (see `context`)."""

    def __init__(self, values: dict[str, Any]) -> None:
        values = _normalized(values)
        validate(values)
        _load_callback_dispatch(values)
        self._values = values
        self._tokens: list[Token[MappingProxyType[str, Any]]] = []

    def __enter__(self) -> SettingsContext:
        merged = {**_overrides.get(), **self._values}
        self._tokens.append(_overrides.set(MappingProxyType(merged)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # reset(), not set(): restores exactly what the enclosing scope had, and
        # fails loudly if the block was exited from a different context.
        _overrides.reset(self._tokens.pop())

    async def __aenter__(self) -> SettingsContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Settings:
    """Read the effective settings: ``settings.lm``, ``settings["lm"]``, ``settings.config``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        overrides = _overrides.get()
        if name in overrides:
            value = overrides[name]
        else:
            try:
                value = _defaults[name]
            except KeyError:
                if name.startswith("__"):
                    raise AttributeError(name) from None
                raise _unknown(name) from None
        if value is None and name == "usage_tracker":
            # Inside `with track_usage() as t:` the setting reads t, as in DSPy.
            return usage_tracker.innermost_tracker()
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise ConfigurationError(
            f"settings are read-only here: use dspex.configure({name}=...) for a process-wide "
            f"default or `with dspex.context({name}=...):` for the current context"
        )

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        if name not in DEFAULTS:
            return default
        return getattr(self, name)

    def __dir__(self) -> list[str]:
        return sorted({*DEFAULTS, "config", "configure", "context", "copy", "get", "save", "load"})

    def copy(self) -> dict[str, Any]:
        """A snapshot of every effective setting (lists copied), e.g. to restore later with
        ``configure(**snapshot)``."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.config.items()}

    @property
    def config(self) -> dict[str, Any]:
        """A snapshot of every effective setting."""
        return {**_defaults, **_overrides.get()}

    def configure(self, **kwargs: Any) -> None:
        """Set process-wide defaults, seen by every thread and task."""
        configure(**kwargs)

    def context(self, **kwargs: Any) -> SettingsContext:
        """Override settings for the current context only (``with`` block)."""
        return SettingsContext(kwargs)

    def save(
        self,
        path: str | os.PathLike[str],
        modules_to_serialize: Iterable[ModuleType] | None = None,
        exclude_keys: Iterable[str] | None = None,
    ) -> None:
        """Write the effective settings to ``path`` with cloudpickle (see `save_settings`)."""
        save_settings(path, modules_to_serialize=modules_to_serialize, exclude_keys=exclude_keys)

    @staticmethod
    def load(path: str | os.PathLike[str], allow_pickle: bool = False) -> dict[str, Any]:
        """Read settings written by `save` (see `load_settings`)."""
        return load_settings(path, allow_pickle=allow_pickle)

    def __repr__(self) -> str:
        return f"Settings({self.config!r})"


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults. A `context(...)` override still wins where active.

    Only the thread (and, inside asyncio, the task) that configured first may call it
    again while it runs; elsewhere it raises `SettingsOwnerError`: use `context` there.
    """
    global _defaults
    kwargs = _normalized(kwargs)
    validate(kwargs)
    _claim_configure()
    _load_callback_dispatch(kwargs)
    with _defaults_lock:
        _defaults = MappingProxyType({**_defaults, **kwargs})


# --- who may configure ------------------------------------------------------------
#
# The process-wide defaults are shared by every thread and task, so two of them
# configuring at once would race (one's LM under the other's adapter). DSPy's rule
# keeps one writer: the first thread to configure owns the defaults, and inside
# asyncio the first task does. Owners are held weakly and checked for being alive,
# so a finished thread or task does not keep the role for ever (unlike DSPy, where
# the first owner keeps it for the life of the process).

_owner_thread: weakref.ref[threading.Thread] | None = None
_owner_task: weakref.ref[asyncio.Task[Any]] | None = None


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        return None


def _in_ipython() -> bool:
    # A notebook runs each cell in a task of its own; DSPy lets them all configure.
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    try:
        return callable(get_ipython) and get_ipython() is not None
    except Exception:
        return False


def _claim_configure() -> None:
    """Record the caller as the owner of the defaults, or raise if another owner lives."""
    global _owner_thread, _owner_task
    with _defaults_lock:
        thread = threading.current_thread()
        owner = _owner_thread() if _owner_thread is not None else None
        if owner is None or not owner.is_alive():
            _owner_thread, owner = weakref.ref(thread), thread
        if owner is not thread:
            raise SettingsOwnerError(
                f"dspex.settings can only be changed by the thread that initially configured "
                f"them ({owner.name}); this is {thread.name}. In this thread use "
                "`with dspex.context(...):` to change settings for the code it runs"
            )
        task = _current_task()
        if task is None:
            return
        owner_task = _owner_task() if _owner_task is not None else None
        if owner_task is None or owner_task.done():
            _owner_task = weakref.ref(task)
            return
        if owner_task is not task and not _in_ipython():
            raise SettingsOwnerError(
                "dspex.configure(...) can only be called from the same async task that "
                f"called it first ({owner_task.get_name()}, still running); this is "
                f"{task.get_name()}. In other tasks use `with dspex.context(...):`, which "
                "changes settings for that task only"
            )


def context(**kwargs: Any) -> SettingsContext:
    """Override settings for the current context only, restoring them on exit.

    Use as ``with context(lm=my_lm): ...`` (an ``await`` inside the block stays
    within the override, as long as the block begins and ends in one task).
    """
    return SettingsContext(kwargs)


def record_trace(predictor: Any, inputs: dict[str, Any], prediction: Any) -> None:
    """Append ``(predictor, inputs, prediction)`` to ``settings.trace`` if tracing.

    Predictors call this once per prediction. The trace keeps at most
    ``settings.max_trace_size`` entries, dropping the oldest.
    """
    trace = settings.trace
    if trace is None:
        return
    trace.append((predictor, dict(inputs), prediction))
    excess = len(trace) - settings.max_trace_size
    if excess > 0:
        del trace[:excess]


# --- saving settings --------------------------------------------------------------

#: per-call state, not something a user configures: never written by `save_settings`
#: (the trace holds the predictors and predictions of calls made so far)
_NOT_SAVED = frozenset({"caller_modules", "trace"})


def save_settings(
    path: str | os.PathLike[str],
    *,
    modules_to_serialize: Iterable[ModuleType] | None = None,
    exclude_keys: Iterable[str] | None = None,
) -> None:
    """Write the effective settings (as `settings.config` shows them) to ``path`` with
    cloudpickle, less ``exclude_keys``.

    ``modules_to_serialize``: modules whose code is pickled by value (cloudpickle's
    ``register_pickle_by_value``), for callbacks or adapters defined in a module that
    the loading process cannot import. An LM is written without its API key; the save
    is refused, nothing written, if a key still shows in the pickled bytes.
    """
    import cloudpickle

    from dspex.primitives import saving

    excluded = set(exclude_keys or ()) | _NOT_SAVED
    values = {k: v for k, v in settings.config.items() if k not in excluded}
    target = Path(path)
    try:
        with saving.pickled_by_value(modules_to_serialize):
            data = cloudpickle.dumps(values)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot save the settings to {target}: {type(exc).__name__}: {exc}. Leave the "
            "settings that cannot be pickled out with exclude_keys=[...]"
        ) from exc
    saving.refuse_secrets(data, saving.api_keys_in(values.values()), "the settings")
    saving.atomic_write(target, data)


def load_settings(path: str | os.PathLike[str], allow_pickle: bool = False) -> dict[str, Any]:
    """Read settings written by `save_settings`: a dict to pass to ``configure(**...)``.

    The file is a pickle, which runs code when read: pass ``allow_pickle=True`` only for
    files you trust (ones you wrote).
    """
    import cloudpickle

    target = Path(path)
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"Loading .pkl files can run arbitrary code, so {target} is not read without "
            "allow_pickle=True: saved settings are a pickle. If you wrote the file (or trust "
            "who did), call load_settings(path, allow_pickle=True)"
        )
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise SavedFileError(f"{target} does not exist (looking for saved settings)") from None
    try:
        loaded = cloudpickle.loads(data)
    except Exception as exc:
        raise SavedFileError(
            f"{target} could not be unpickled ({type(exc).__name__}: {exc}); it loads only where "
            "the modules its values come from can be imported (or were saved with "
            "modules_to_serialize=[...])"
        ) from exc
    if not isinstance(loaded, dict):
        raise SavedFileError(
            f"{target} holds a {type(loaded).__name__}, not saved settings (a dict written by "
            "dspex.settings.save)"
        )
    return loaded


settings = Settings()


def _history_scope() -> history.RecordingScope:
    overrides = _overrides.get()
    defaults = _defaults

    def read(name: str) -> Any:
        return overrides[name] if name in overrides else defaults[name]

    if read("disable_history"):
        return _HISTORY_OFF
    return history.RecordingScope(True, read("max_history_size"), read("caller_modules"))


_HISTORY_OFF = history.RecordingScope(enabled=False)


def _configured_usage_tracker() -> Any:
    # The value set with configure/context only: trackers opened with track_usage are
    # told of each call by the usage module itself.
    overrides = _overrides.get()
    return overrides["usage_tracker"] if "usage_tracker" in overrides else _defaults["usage_tracker"]


# The LM client sits below settings and cannot read them, so it asks these hooks
# whether and where to record a call in its history (`disable_history`,
# `max_history_size` and the calling modules, as in DSPy) and which tracker the
# `usage_tracker` setting names.
def _configured_redactors() -> Any:
    overrides = _overrides.get()
    return overrides["redactors"] if "redactors" in overrides else _defaults["redactors"]


history.recording_scope = _history_scope
usage_tracker.configured_tracker = _configured_usage_tracker
# The LM client and the privacy package sit below settings: they read the
# `redactors` setting through this hook.
privacy_session.configured_redactors = _configured_redactors
