"""The request-dispatcher seam: where an `LM`'s cache-missed requests are sent.

By default (no dispatcher installed) an LM makes its HTTP calls in this
process. The runtime installs a dispatcher when it starts (``dspex.init`` in the
driver, its worker setup hook in every Ray worker): the pool dispatcher, which
sends each request to its endpoint's provider pool so rate limits, the circuit
breaker and single-flight hold cluster-wide. ``dspex.shutdown`` uninstalls it.

So the LM client never asks whether Ray is up: what is installed here is where
requests go. A dispatcher may also offer ``gate(lm, attempt_fn, tokens=, policy=)``:
requests that are not chat completions (embeddings, `dspex.clients.embedding`) are
then made by their caller under the permits of ``lm``'s endpoint pool. The cache stays in front of any dispatcher: a hit never leaves the
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dspex.clients.lm import LM
    from dspex.clients.types import LMResponse, Message


class Dispatcher(Protocol):
    """Sends one LM request somewhere else and returns its response or raises its error."""

    async def send(
        self,
        lm: LM,
        messages: Sequence[Message],
        params: dict[str, Any],
        key: str | None,
        *,
        num_retries: int | None = None,
    ) -> LMResponse:
        """``key``: the request's cache key (identical in-flight requests may share one
        call; None never shares). ``num_retries``: overrides the LM's (0 under a run
        budget, where the LM retries itself so each attempt is reserved)."""
        ...


_installed: Dispatcher | None = None


def install_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Send this process's LM requests through ``dispatcher``; None: in-process again."""
    global _installed
    _installed = dispatcher


def current_dispatcher() -> Dispatcher | None:
    """The installed dispatcher, or None when requests are made in-process."""
    return _installed


__all__ = ["Dispatcher", "current_dispatcher", "install_dispatcher"]
