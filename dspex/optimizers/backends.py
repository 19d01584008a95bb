"""Where ``optimizer.compile`` runs: in-process, or in a backend the runtime registers.

The core compiles in the calling process. The runtime registers the
``"coordinator"`` backend (an `OptimizationCoordinator` actor that owns the
run, survives the driver and resumes after a crash) when it is loaded in a
process, and ``dspex.init()`` makes it the default until ``dspex.shutdown()``.
``compile(coordinator=True)`` asks for it explicitly, ``coordinator=False``
keeps the run in-process, ``None`` follows the default.

So optimizers never ask whether Ray is up: what is registered here is what runs.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from dspex.errors import ConfigurationError

CompileBackend = Callable[..., Awaitable[Any]]
"""``await backend(optimizer, student, *, trainset, valset, run_id, max_lm_calls, max_cost,
store, **kwargs) -> program``"""

COORDINATOR = "coordinator"

_lock = threading.Lock()
_backends: dict[str, CompileBackend] = {}
_default: str | None = None  # None: compile in-process


def register_compile_backend(name: str, backend: CompileBackend) -> None:
    """Make ``backend`` available by ``name`` (replacing one of the same name)."""
    with _lock:
        _backends[name] = backend


def set_default_compile_backend(name: str | None) -> None:
    """The backend ``compile(coordinator=None)`` uses; None compiles in-process."""
    global _default
    with _lock:
        if name is not None and name not in _backends:
            raise ConfigurationError(f"no compile backend named {name!r} is registered")
        _default = name


def compile_backend(coordinator: bool | None) -> CompileBackend | None:
    """The backend a compile with this ``coordinator=`` choice goes to; None: in-process."""
    if coordinator is False:
        return None
    if coordinator is None:
        default = _default
        return None if default is None else _backends[default]
    backend = _backends.get(COORDINATOR)
    if backend is None:
        raise ConfigurationError(
            "compile(coordinator=True) needs the dspex runtime, which is not loaded in this "
            "process: call dspex.init() first (it starts or attaches to Ray and the "
            "optimizers' supervisor), or pass coordinator=False to compile in-process"
        )
    return backend


__all__ = [
    "COORDINATOR",
    "CompileBackend",
    "compile_backend",
    "register_compile_backend",
    "set_default_compile_backend",
]
