"""The steps of one LM request after the cache, shared by every place that sends one.

The in-process `LM` and the runtime's provider pool actor both send requests
through these functions, so a request is encoded, sent, decoded, priced and
split the same way wherever it runs:

    send_n(protocol, params, send_one)     n > 1 on a provider without ``n``:
                                           n single requests, merged
    post_once(...)                         protocol encodes -> transport posts ->
                                           protocol decodes or raises a typed LMError
    priced(response, price)                the response's cost by a price table entry

What differs between the two callers sits around these steps: the LM adds the
per-process concurrency cap and the run budget; the pool adds the cluster-wide
breaker, rate limiter and concurrency slots. Retries (`dspex.clients.retry`) and
single-flight (`dspex.clients.single_flight`) are shared the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dspex.clients.pricing import Price, cost_usd
from dspex.clients.streaming import stream_once, wants_stream
from dspex.clients.transport import HTTPResponse, Transport
from dspex.clients.types import LMResponse, Message, Output, Usage


class ChatProtocol(Protocol):
    """What a provider's wire format does (OpenAI Chat Completions, Anthropic Messages)."""

    default_api_base: str
    api_key_env: str
    api_base_envs: tuple[str, ...]
    supports_n: bool

    def build_request(
        self,
        *,
        api_base: str,
        model_name: str,
        messages: Sequence[Message],
        params: dict[str, Any],
        api_key: str | None,
    ) -> tuple[str, dict[str, str], bytes]: ...

    def parse_response(self, http: HTTPResponse, *, model: str) -> LMResponse: ...


@dataclass(frozen=True)
class Endpoint:
    """Where a request goes: no secret, so it can be logged, hashed and pickled."""

    provider: str
    model: str  # as the LM spells it: "openai/gpt-4o-mini"
    model_name: str  # as the provider spells it: "gpt-4o-mini"
    api_base: str


_default_transport: Transport | None = None


def default_transport() -> Transport:
    """The process-wide aiohttp transport, imported on first use (so importing dspex
    does not import aiohttp)."""
    global _default_transport
    if _default_transport is None:
        from dspex.clients.aiohttp_transport import default_transport as make

        _default_transport = make()
    return _default_transport


async def post_once(
    protocol: ChatProtocol,
    endpoint: Endpoint,
    messages: Sequence[Message],
    params: dict[str, Any],
    *,
    api_key: str | None,
    transport: Transport | None,
    timeout: float,
) -> LMResponse:
    """One HTTP attempt: encode, post, decode (or raise the typed error of the answer).

    Inside `dspex.clients.streaming.streaming_to(sink)` the attempt is streamed: each
    text delta goes to the sink as it arrives, and the assembled answer is returned."""
    transport = transport or default_transport()
    sink = wants_stream(params, transport)
    if sink is not None:
        return await stream_once(
            protocol, endpoint, messages, params,
            api_key=api_key, transport=transport, timeout=timeout, sink=sink,
        )
    url, headers, body = protocol.build_request(
        api_base=endpoint.api_base,
        model_name=endpoint.model_name,
        messages=messages,
        params=params,
        api_key=api_key,
    )
    http = await transport.post(
        url, headers=headers, body=body, timeout=timeout
    )
    return protocol.parse_response(http, model=endpoint.model)


def priced(response: LMResponse, price: Price | None) -> LMResponse:
    """``response`` with its cost computed from ``price`` (unchanged without a price,
    for a response that made no call, or when the cost already agrees)."""
    usage = response.usage
    if price is None or response.cached or usage.calls == 0:
        return response
    cost = cost_usd(price, usage.prompt_tokens, usage.completion_tokens)
    if cost == usage.cost:
        return response
    return LMResponse(
        outputs=response.outputs,
        usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.calls, cost),
        model=response.model,
        cached=response.cached,
        finish_reasons=response.finish_reasons,
    )


async def send_n(
    protocol: ChatProtocol,
    params: dict[str, Any],
    model: str,
    send_one: Callable[[dict[str, Any]], Awaitable[LMResponse]],
) -> LMResponse:
    """``send_one(params)``; for ``n > 1`` on a provider without ``n``, n single
    requests sent together and merged into one response of n outputs."""
    n = params.get("n", 1)
    if n <= 1 or protocol.supports_n:
        return await send_one(params)
    single = {k: v for k, v in params.items() if k != "n"}
    parts = await asyncio.gather(*(send_one(single) for _ in range(n)))
    return merge(list(parts), model)


def merge(parts: list[LMResponse], model: str) -> LMResponse:
    """Several single-output responses as one response with all their outputs."""
    usage = Usage()
    outputs: list[Output] = []
    finish: list[str | None] = []
    for part in parts:
        usage = usage + part.usage
        outputs.extend(part.outputs)
        finish.extend(part.finish_reasons)
    return LMResponse(outputs=outputs, usage=usage, model=model, finish_reasons=finish)


__all__ = [
    "ChatProtocol",
    "Endpoint",
    "default_transport",
    "merge",
    "post_once",
    "priced",
    "send_n",
]
