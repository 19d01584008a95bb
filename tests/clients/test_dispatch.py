"""The request-dispatcher seam: where an LM's cache-missed requests go.

A dispatcher written here (as the runtime writes its pool dispatcher) forwards
each request through the shared pipeline to a real HTTP server, so these tests
see what the LM hands a dispatcher and what it keeps for itself: the cache and
single-flight in front, the run budget reserved per attempt, the key passed
only as the credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dspex.clients import LM, dispatch
from dspex.clients.budget import CallBudget, budget_scope
from dspex.clients.pipeline import post_once, priced, send_n
from dspex.clients.types import LMResponse, Message

MSGS = [{"role": "user", "content": "hello"}]
SECRET = "sk-dispatch-SECRET-42"


class Forwarding:
    """Sends each request through the shared pipeline, recording what it was handed."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def send(
        self,
        lm: LM,
        messages: Sequence[Message],
        params: dict[str, Any],
        key: str | None,
        *,
        num_retries: int | None = None,
    ) -> LMResponse:
        self.seen.append({"key": key, "num_retries": num_retries, "params": dict(params)})
        endpoint, api_key = lm.endpoint(), lm.credential()

        async def one(p: dict[str, Any]) -> LMResponse:
            return await post_once(
                lm.protocol, endpoint, messages, p, api_key=api_key, transport=None, timeout=10
            )

        return priced(await send_n(lm.protocol, params, lm.model, one), lm.resolved_price)


@pytest.fixture
def forwarding() -> Iterator[Forwarding]:
    dispatcher = Forwarding()
    previous = dispatch.current_dispatcher()
    dispatch.install_dispatcher(dispatcher)
    try:
        yield dispatcher
    finally:
        dispatch.install_dispatcher(previous)


async def test_cache_misses_go_to_the_dispatcher_and_hits_stay_home(
    server: Any, isolated_cache: Any, forwarding: Forwarding
) -> None:
    lm = LM("openai/m", api_base=server.base_url, api_key=SECRET, price=(1.0, 2.0))
    first = await lm.acomplete(MSGS)
    again = await lm.acomplete(MSGS)
    assert first.outputs == again.outputs == ["echo: hello"]
    assert len(forwarding.seen) == 1 and server.count == 1  # the hit never left the process
    assert again.cached and not first.cached
    assert forwarding.seen[0]["key"] is not None and forwarding.seen[0]["num_retries"] is None
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert first.usage.cost == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)  # priced as in-process
    assert lm.usage.calls == 1  # usage and history are kept by the caller, not the dispatcher


async def test_identical_requests_in_flight_reach_the_dispatcher_once(
    server: Any, isolated_cache: Any, forwarding: Forwarding
) -> None:
    server.default_gated = True  # hold answers until the gate opens, so all ten overlap
    lm = LM("openai/m", api_base=server.base_url)
    calls = [asyncio.ensure_future(lm.acomplete(MSGS)) for _ in range(10)]
    deadline = asyncio.get_running_loop().time() + 10
    while server.count < 1:
        assert asyncio.get_running_loop().time() < deadline, "the request never arrived"
        await asyncio.sleep(0.01)
    server.open_gate()
    responses = await asyncio.gather(*calls)
    assert len(forwarding.seen) == 1
    assert sum(not r.cached for r in responses) == 1  # one paid, nine shared it


async def test_under_a_budget_each_attempt_is_reserved_by_the_caller(
    server: Any, isolated_cache: Any, forwarding: Forwarding
) -> None:
    lm = LM("openai/m", api_base=server.base_url, cache=False)
    budget = CallBudget(max_calls=2)
    with budget_scope(budget):
        await lm.acomplete(MSGS)
        await lm.acomplete(MSGS)
    # The dispatcher's target must not retry out of the budget's sight.
    assert [s["num_retries"] for s in forwarding.seen] == [0, 0]
    assert budget.calls == 2 and budget.holders == 0  # both spent, nothing left reserved


async def test_without_a_dispatcher_requests_are_made_in_process(
    server: Any, isolated_cache: Any
) -> None:
    assert dispatch.current_dispatcher() is None
    lm = LM("openai/m", api_base=server.base_url, cache=False)
    assert (await lm.acomplete(MSGS)).outputs == ["echo: hello"]
    assert server.count == 1
