"""Where `Evaluate` runs its examples: a registry of runners the runtime fills.

The core has one runner, ``"local"``: in-process on asyncio (`run_local`). The
runtime registers ``"ray"`` (EvalWorker actors across the cluster) when it is
loaded in a process, and ``dspex.init()`` makes it the default until
``dspex.shutdown()`` puts ``"local"`` back. `Evaluate(runner=None)` uses the
default; ``runner="local"``/``"ray"`` asks for one by name.

So evaluation never asks whether Ray is up: what is registered here is what
runs.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError

RunFunction = Callable[..., Awaitable[Any]]
"""``await run(program, metric, examples, options, progress) -> RunOutcome``"""

LOCAL = "local"


@dataclass(frozen=True)
class Runner:
    """A way to run an evaluation's examples."""

    name: str
    run: RunFunction
    remote: bool
    """The LM work happens in other processes: this process's usage trackers and run
    budget do not see it, so a run charges the result's usage itself."""


async def _run_in_process(*args: Any, **kwargs: Any) -> Any:
    from dspex.evaluate.runner import run_local

    return await run_local(*args, **kwargs)


_lock = threading.Lock()
_runners: dict[str, Runner] = {LOCAL: Runner(LOCAL, _run_in_process, remote=False)}
_default = LOCAL


def register_runner(runner: Runner) -> None:
    """Make ``runner`` available by its name (replacing one of the same name)."""
    with _lock:
        _runners[runner.name] = runner


def set_default_runner(name: str | None) -> None:
    """The runner ``Evaluate(runner=None)`` uses; None restores ``"local"``."""
    global _default
    with _lock:
        if name is not None and name not in _runners:
            raise ConfigurationError(f"no evaluation runner named {name!r} is registered")
        _default = name or LOCAL


def default_runner() -> Runner:
    return _runners[_default]


def get_runner(name: str | None) -> Runner:
    """The runner named ``name`` (None: the default); a clear error when it is missing."""
    if name is None:
        return default_runner()
    runner = _runners.get(name)
    if runner is not None:
        return runner
    if name == "ray":
        raise ConfigurationError(
            "Evaluate(runner='ray') needs the dspex runtime, which is not loaded in this "
            "process: call dspex.init() first (it starts or attaches to Ray and installs the "
            "Ray runner), or use runner='local' to evaluate in-process"
        )
    known = ", ".join(repr(n) for n in sorted(_runners))
    raise ConfigurationError(f"no evaluation runner named {name!r}; registered: {known}")


__all__ = [
    "LOCAL",
    "RunFunction",
    "Runner",
    "default_runner",
    "get_runner",
    "register_runner",
    "set_default_runner",
]
