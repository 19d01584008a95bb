"""Single-flight: identical requests in flight at the same time share one call.

Used by the in-process `LM` (keyed by cache key, one table per event loop) and
by the provider pool actor (keyed by cache key, credential and workload), so the
rule lives here once:

- the first request for a key (the leader) makes the call; the others (followers)
  await its outcome, shielded, so a follower being cancelled never cancels the
  leader's call;
- if the leader is cancelled, its followers do not inherit the cancellation:
  they see `LEADER_GONE` and go round again, one of them becoming the new leader;
- a leader's error is every follower's error (the call was made once and failed);
- a follower's response is `shared(response)`: marked cached, at no cost, because
  another request paid for the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from dspex.clients.types import LMResponse, Usage

LEADER_GONE = object()
"""Set on a flight whose leader was cancelled: followers try again themselves."""

_NO_USAGE = Usage(0, 0, 0, 0.0)


def shared(response: LMResponse) -> LMResponse:
    """``response`` as a request that did not make the call sees it: cached, cost-free,
    with lists of its own (so no caller edits another's)."""
    return LMResponse(
        outputs=list(response.outputs),
        usage=_NO_USAGE,
        model=response.model,
        cached=True,
        finish_reasons=list(response.finish_reasons),
    )


class SingleFlight:
    """One event loop's table of calls in flight, by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(
        self,
        key: Hashable,
        call: Callable[[], Awaitable[LMResponse]],
        *,
        on_shared: Callable[[], None] | None = None,
    ) -> LMResponse:
        """``await call()`` unless a call for ``key`` is in flight; then its outcome."""
        while (leader := self._flights.get(key)) is not None:
            result = await asyncio.shield(leader)
            if result is not LEADER_GONE:
                if on_shared is not None:
                    on_shared()
                return shared(result)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            response = await call()
        except asyncio.CancelledError:
            future.set_result(LEADER_GONE)
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning without followers
            raise
        finally:
            if self._flights.get(key) is future:
                del self._flights[key]
        future.set_result(response)
        return response


_per_loop: dict[asyncio.AbstractEventLoop, SingleFlight] = {}


def loop_single_flight() -> SingleFlight:
    """The running loop's table (asyncio futures belong to one loop)."""
    loop = asyncio.get_running_loop()
    flights = _per_loop.get(loop)
    if flights is None:
        for closed in [lp for lp in list(_per_loop) if lp.is_closed()]:
            _per_loop.pop(closed, None)
        flights = _per_loop.setdefault(loop, SingleFlight())
    return flights


__all__ = ["LEADER_GONE", "SingleFlight", "loop_single_flight", "shared"]
