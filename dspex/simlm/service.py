"""The simulated LM as a supervised service: an actor that runs the HTTP server.

Started as a child of the root supervisor (``dspex demo`` does this), so a crash
of the server's process is restarted like any other service. It listens on a
fixed port chosen before the first start, so a restart keeps the URL stable for
the LMs already pointed at it.
"""

from __future__ import annotations

import socket
from typing import Any

from dspex.runtime.supervision.child import Supervised


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimLMService(Supervised):
    def __init__(self, port: int, seed: int = 0, latency_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
        from dspex.simlm import start_sim_lm

        self._server = start_sim_lm(port=port, seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms)

    async def url(self) -> str:
        return self._server.url

    async def stats(self) -> dict[str, Any]:
        return self._server.stats()

    async def terminate(self, reason: str) -> None:
        self._server.stop()
