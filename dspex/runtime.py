"""Starting, attaching to and stopping the dspex runtime on a Ray cluster.

``dspex.init()`` starts a local Ray (or connects to ``address=`` / ``RAY_ADDRESS``)
and starts or attaches to the root supervisor, a detached named actor in the
``dspex`` namespace, so a second driver attaching to the same cluster sees the
same tree. While the runtime is up, evaluations fan out to EvalWorker actors and
LM requests go through the cluster's provider pools.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "dspex"
ROOT_SUPERVISOR = "dspex.root"

log = logging.getLogger("dspex.runtime")


@dataclass
class Runtime:
    """What ``dspex.init`` set up in this process."""

    address: str | None
    started_ray: bool
    root: Any = None
    options: dict[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
_runtime: Runtime | None = None


def active() -> bool:
    """Whether this process has the runtime up (``dspex.init`` was called)."""
    return _runtime is not None


def current() -> Runtime | None:
    return _runtime


def init(address: str | None = None, *, num_cpus: int | None = None, **ray_kwargs: Any) -> Runtime:
    """Start (or attach to) Ray and the dspex supervision tree. Idempotent."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, **ray_kwargs}
            if address is None:
                kwargs.setdefault("include_dashboard", False)
                if num_cpus is not None:
                    kwargs["num_cpus"] = num_cpus
            ray.init(address=address, **kwargs)
            started = address is None
        runtime = Runtime(address=address, started_ray=started, options=dict(ray_kwargs))
        runtime.root = _start_root()
        _runtime = runtime
        _enable_pools()
        log.info("dspex runtime up (address=%s)", address or "local")
        return runtime


def shutdown() -> None:
    """Stop the supervision tree (children in reverse start order) and, if we started it, Ray."""
    global _runtime
    with _lock:
        runtime = _runtime
        if runtime is None:
            return
        _disable_pools()
        _stop_root(runtime)
        _runtime = None
        if runtime.started_ray:
            import ray

            ray.shutdown()


def _start_root() -> Any:
    try:
        from dspex.supervisors.application import start_root
    except ImportError:
        return None
    return start_root()


def _stop_root(runtime: Runtime) -> None:
    if runtime.root is None:
        return
    from dspex.supervisors.application import stop_root

    stop_root(runtime.root)


def _enable_pools() -> None:
    try:
        from dspex.actors.pool_client import enable_pools
    except ImportError:
        return
    enable_pools()


def _disable_pools() -> None:
    try:
        from dspex.actors.pool_client import disable_pools
    except ImportError:
        return
    disable_pools()
