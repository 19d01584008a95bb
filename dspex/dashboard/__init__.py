"""`dspex dashboard`: a live web page of optimization runs and the runtime.

Runs, trials and LM usage come from the run store; provider pools, the
supervision tree, dead letters and events from the runtime when one is
connected. Nothing is imported until used (aiohttp loads only with the server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.dashboard.server import DEFAULT_PORT, create_app, serve_forever, start

__all__ = ["DEFAULT_PORT", "create_app", "serve_forever", "start"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dspex.dashboard import server

        return getattr(server, name)
    raise AttributeError(f"module 'dspex.dashboard' has no attribute {name!r}")
