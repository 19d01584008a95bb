"""A simulated, OpenAI- and Anthropic-compatible LM for tests, demos and benchmarks.

It is an oracle over bundled datasets (`datasets.names()`): it answers their
questions in the format dspex's adapters ask for, correct with a probability
that rises with good demos, good instructions and chain of thought, and it can
inject latency and faults.

    from dspex.providers.simlm import start_sim_lm, SimTransport, datasets

    with start_sim_lm(seed=1, latency_ms=5) as lm:     # real HTTP, background thread
        ... lm.url ...                                  # http://127.0.0.1:PORT/v1

Everything is imported lazily so `import dspex` stays fast (aiohttp's web
server is only loaded when a server starts).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.providers.simlm import datasets
    from dspex.providers.simlm.faults import FaultConfig
    from dspex.providers.simlm.oracle import OracleConfig
    from dspex.providers.simlm.process import SimLMProcess, spawn_sim_lm
    from dspex.providers.simlm.server import SimLMServer
    from dspex.providers.simlm.transport import SimTransport

_LAZY: dict[str, str] = {
    "FaultConfig": "dspex.providers.simlm.faults",
    "OracleConfig": "dspex.providers.simlm.oracle",
    "SimLMServer": "dspex.providers.simlm.server",
    "SimLMProcess": "dspex.providers.simlm.process",
    "spawn_sim_lm": "dspex.providers.simlm.process",
    "SimTransport": "dspex.providers.simlm.transport",
}


def start_sim_lm(
    *,
    port: int = 0,
    seed: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    faults: FaultConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    api_key: str | None = None,
) -> SimLMServer:
    """Start a simulated LM HTTP server on a background thread (port 0: any free port)."""
    from dspex.providers.simlm.core import SimCore
    from dspex.providers.simlm.server import SimLMServer

    core = SimCore(
        seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, faults=faults, api_key=api_key
    )
    return SimLMServer(core, host=host, port=port).start()


def __getattr__(name: str) -> Any:
    if name == "datasets":
        return importlib.import_module("dspex.providers.simlm.datasets")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FaultConfig",
    "OracleConfig",
    "SimLMProcess",
    "SimLMServer",
    "SimTransport",
    "datasets",
    "spawn_sim_lm",
    "start_sim_lm",
]
