"""Settings: process-wide defaults with per-context overrides.

``settings.lm`` reads the effective value: the innermost `context(...)` override
active in the current context (task or thread), else the process-wide default
set with `configure(...)`.

- `configure(**kw)` changes the defaults for every thread and task (copy on
  write under a lock, so a reader never sees a half-applied update).
- `context(**kw)` overrides values in a `contextvars.ContextVar`. An asyncio
  task gets a copy of its creator's context, so overrides made inside one task
  of an ``asyncio.gather`` are invisible to its siblings. A new thread starts
  with an empty context: it sees only the defaults unless it is started through
  ``contextvars.copy_context().run`` (``asyncio.to_thread`` does this).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any

from dspex.clients import history
from dspex.errors import ConfigurationError, UnknownSettingError
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
#   track_usage                      always True: every prediction carries its LM usage
#   callbacks                        by `dspex.primitives.callbacks`
DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "lm": None,
        "adapter": None,
        "trace": None,
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
    "track_usage": (
        lambda v: v is True,
        "True: dspex always records each prediction's LM usage (prediction.usage, "
        "prediction.get_lm_usage()); to sum a block's calls use `with dspex.track_usage()`",
    ),
    "callbacks": (lambda v: isinstance(v, list), "a list"),
    "num_threads": (lambda v: _is_int(v, 1), "an int >= 1"),
    "max_errors": (lambda v: v is None or _is_int(v, 0), "an int >= 0 or None"),
    "disable_history": (lambda v: isinstance(v, bool), "a bool"),
    "max_history_size": (lambda v: _is_int(v, 0), "an int >= 0"),
    "usage_tracker": (
        lambda v: v is None or callable(getattr(v, "add_usage", None)),
        "None or a usage tracker (dspex.utils.usage_tracker.UsageTracker)",
    ),
    "rollout_id": (
        lambda v: v is None or (isinstance(v, int | str) and not isinstance(v, bool)),
        "an int, a str or None",
    ),
    "caller_modules": (lambda v: isinstance(v, tuple), "a tuple"),
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
        return sorted({*DEFAULTS, "config", "configure", "context", "copy", "get"})

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

    def __repr__(self) -> str:
        return f"Settings({self.config!r})"


def configure(**kwargs: Any) -> None:
    """Set process-wide defaults. A `context(...)` override still wins where active."""
    global _defaults
    validate(kwargs)
    _load_callback_dispatch(kwargs)
    with _defaults_lock:
        _defaults = MappingProxyType({**_defaults, **kwargs})


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
history.recording_scope = _history_scope
usage_tracker.configured_tracker = _configured_usage_tracker
