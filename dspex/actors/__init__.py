"""Actor wrappers of dspex's long-lived services (provider pools, ...).

Names are imported on first use (PEP 562): the LM client imports
`dspex.actors.pool_client` on every process start, and that must not pull in Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "PoolConfig": "dspex.actors.provider_pool",
    "PoolRequest": "dspex.actors.provider_pool",
    "ProviderPool": "dspex.actors.provider_pool",
    "disable_pools": "dspex.actors.pool_client",
    "enable_pools": "dspex.actors.pool_client",
    "pool_name": "dspex.actors.pool_client",
    "pool_routing_enabled": "dspex.actors.pool_client",
    "pool_spec": "dspex.actors.pool_client",
    "pool_stats": "dspex.actors.pool_client",
    "request_deadline": "dspex.actors.pool_client",
    "start_pool": "dspex.actors.pool_client",
    "stop_pool": "dspex.actors.pool_client",
}

__all__ = [
    "PoolConfig",
    "PoolRequest",
    "ProviderPool",
    "disable_pools",
    "enable_pools",
    "pool_name",
    "pool_routing_enabled",
    "pool_spec",
    "pool_stats",
    "request_deadline",
    "start_pool",
    "stop_pool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from dspex.actors.pool_client import (
        disable_pools,
        enable_pools,
        pool_name,
        pool_routing_enabled,
        pool_spec,
        pool_stats,
        request_deadline,
        start_pool,
        stop_pool,
    )
    from dspex.actors.provider_pool import PoolConfig, PoolRequest, ProviderPool
