"""What every Ray worker of a dspex job does when it starts: fill the core's seams.

``dspex.init`` puts `setup_worker` in the job's ``runtime_env`` as Ray's
``worker_process_setup_hook``, so each worker process (an `EvalWorker`, a
coordinator, a served replica, or a plain ``@ray.remote`` task of the user's)
installs the provider-pool dispatcher before it runs anything: its LM requests
go to the cluster's pools exactly as the driver's do.

``DSPEX_POOLS=0`` in the job's environment keeps workers' requests in their own
processes (for example to compare the two, or when each worker must use its own
endpoint limits).

Composition. A ``worker_process_setup_hook`` the user passes to ``dspex.init``
is kept: given as a module path it is run by this hook first (through
``DSPEX_USER_SETUP_HOOK``); given as a callable it is wrapped with ours. In a
submitted job whose own runtime_env already names a hook, Ray allows no second
one, so the job's stands; the runtime's own actors then enable pools themselves
(`setup_worker` is idempotent), and a user's task can call it.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

POOLS_ENV = "DSPEX_POOLS"
USER_HOOK_ENV = "DSPEX_USER_SETUP_HOOK"
HOOK_PATH = "dspex.runtime.worker_setup.setup_worker"
HOOK_FIELD = "worker_process_setup_hook"

log = logging.getLogger("dspex.runtime")


def pools_wanted() -> bool:
    """Whether this worker's job asks for pool routing (anything but DSPEX_POOLS=0/false)."""
    return os.environ.get(POOLS_ENV, "1").strip().lower() not in ("0", "false", "no")


def setup_worker() -> None:
    """Ray's setup hook for dspex workers: the user's hook (if any), then pool routing."""
    user_hook = os.environ.get(USER_HOOK_ENV)
    if user_hook:
        _load(user_hook)()
    install_pool_routing()


def install_pool_routing() -> None:
    """Route this worker's LM requests through the provider pools unless the job opted
    out. Idempotent: the runtime's actors call it too."""
    if not pools_wanted():
        return
    from dspex.runtime.pools.pool_client import enable_pools

    enable_pools()


def with_setup_hook(runtime_env: dict[str, Any], job_runtime_env: dict[str, Any]) -> dict[str, Any]:
    """``runtime_env`` with dspex's setup hook added (the user's hook composed with it);
    unchanged when the submitted job's runtime_env already has a hook."""
    if job_runtime_env.get(HOOK_FIELD):
        log.info(
            "dspex.init: the job's runtime_env has its own worker_process_setup_hook; "
            "dspex's actors enable pool routing themselves, and a task of yours can call "
            "dspex.runtime.worker_setup.setup_worker()"
        )
        return runtime_env
    env = dict(runtime_env)
    user_hook = env.get(HOOK_FIELD)
    if user_hook is None:
        env[HOOK_FIELD] = HOOK_PATH
    elif isinstance(user_hook, str):
        if user_hook != HOOK_PATH:
            env["env_vars"] = {**(env.get("env_vars") or {}), USER_HOOK_ENV: user_hook}
            env[HOOK_FIELD] = HOOK_PATH
    elif callable(user_hook):
        env[HOOK_FIELD] = _composed(user_hook)
    return env


def _composed(user_hook: Callable[[], Any]) -> Callable[[], None]:
    def dspex_worker_setup() -> None:
        user_hook()
        install_pool_routing()

    return dspex_worker_setup


def _load(path: str) -> Callable[[], Any]:
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


__all__ = [
    "HOOK_PATH",
    "POOLS_ENV",
    "install_pool_routing",
    "pools_wanted",
    "setup_worker",
    "with_setup_hook",
]
