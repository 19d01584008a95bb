"""A simulated, OpenAI- and Anthropic-compatible LM for tests, demos and benchmarks.

It is an oracle over bundled datasets (`datasets.names()`): it answers their
questions in the format dspex's adapters ask for, correct with a probability
that rises with good demos, good instructions and chain of thought, and it can
inject latency and faults. For retrieval it serves OpenAI-style ``/v1/embeddings``
and a ColBERTv2-style ``/search`` over a passage corpus written from its facts
dataset (`retrieval`, `corpus`), and answers better with the right passage in context.

    from dspex.simlm import start_sim_lm, SimTransport, datasets

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
    from dspex.simlm import datasets
    from dspex.simlm.faults import FaultConfig
    from dspex.simlm.oracle import OracleConfig
    from dspex.simlm.process import SimLMProcess, spawn_sim_lm
    from dspex.simlm.server import SimLMServer
    from dspex.simlm.transport import SimTransport

_LAZY: dict[str, str] = {
    "FaultConfig": "dspex.simlm.faults",
    "OracleConfig": "dspex.simlm.oracle",
    "SimLMServer": "dspex.simlm.server",
    "SimLMProcess": "dspex.simlm.process",
    "spawn_sim_lm": "dspex.simlm.process",
    "SimTransport": "dspex.simlm.transport",
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
    from dspex.simlm.core import SimCore
    from dspex.simlm.server import SimLMServer

    core = SimCore(
        seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, faults=faults, api_key=api_key
    )
    return SimLMServer(core, host=host, port=port).start()


def __getattr__(name: str) -> Any:
    if name == "datasets":
        return importlib.import_module("dspex.simlm.datasets")
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
