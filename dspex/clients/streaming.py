"""Streamed LM requests: the same request pipeline, with a transport that yields chunks.

Who wants a stream says so by setting a `DeltaSink` in the context
(`streaming_to`); `dspex.streaming` does it around a predictor whose output a
listener follows. Every request made in that context then goes through the
usual pipeline (cache, single-flight, budget, limits, breaker lease, retries,
usage, history) and only its last step changes: `post_once` opens the request
as a stream and hands each text delta to the sink as it arrives, then returns
the assembled `LMResponse`, which is what gets cached, priced and recorded.

What reaches the sink when the answer did not stream (a cache hit, an identical
request's answer shared by single-flight, a provider pool actor that answered,
a transport that cannot stream, a BaseLM): the whole text, as one chunk
(`deliver_unstreamed`, called by the adapter after the LM call).

Retries. A cut stream raises `LMStreamInterruptedError`. The pipeline retries it
(like any retryable error) only while no delta of this answer has reached the
sink: once the consumer has seen part of an answer, a silent second attempt
would show it a different answer spliced onto the first, so the error goes to
the consumer (with ``chunks_delivered``) instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from dspex.clients.stream_decode import decoder_for, stream_params
from dspex.clients.types import LMResponse, Message, output_text
from dspex.errors import LMError, LMStreamInterruptedError

if TYPE_CHECKING:
    from dspex.clients.pipeline import ChatProtocol, Endpoint
    from dspex.clients.transport import Transport


class DeltaSink:
    """Receives the text of an answer as it streams. Subclass and override `receive`.

    ``delivered`` counts the deltas of the current answer (reset by `begin`), so the
    pipeline knows whether a retry is still invisible to the consumer and whether the
    answer streamed at all.
    """

    def __init__(self) -> None:
        self.delivered = 0

    def begin(self, adapter: Any = None) -> None:
        """A new answer starts (one adapter call), written in ``adapter``'s format."""
        self.delivered = 0

    async def send(self, text: str) -> None:
        if not text:
            return
        self.delivered += 1
        await self.receive(text)

    async def receive(self, text: str) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        """The predictor's call returned: flush what is held back (a listener's tail)."""


_sink: contextvars.ContextVar[DeltaSink | None] = contextvars.ContextVar("dspex_delta_sink", default=None)


def current_sink() -> DeltaSink | None:
    """The sink requests made here stream into (None: nobody is streaming)."""
    return _sink.get()


@contextmanager
def streaming_to(sink: DeltaSink | None) -> Iterator[DeltaSink | None]:
    """Stream the answers of the LM requests made inside into ``sink``."""
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


class StreamRouter(Protocol):
    """A streamed run (`dspex.streaming`): gives each predictor the sink its answers
    stream into, or None when nobody listens to it."""

    def sink_for(self, predictor: Any) -> DeltaSink | None: ...


_router: contextvars.ContextVar[StreamRouter | None] = contextvars.ContextVar("dspex_stream_router", default=None)


def active_router() -> StreamRouter | None:
    """The streamed run this code runs in (None: not streaming)."""
    return _router.get()


@contextmanager
def routing_streams(router: StreamRouter | None) -> Iterator[StreamRouter | None]:
    """Run the code inside as part of the streamed run ``router``."""
    token = _router.set(router)
    try:
        yield router
    finally:
        _router.reset(token)


def wants_stream(params: dict[str, Any], transport: Transport) -> DeltaSink | None:
    """The sink to stream this request into: only one completion (``n`` answers cannot
    share one text stream) over a transport that can stream."""
    sink = _sink.get()
    if sink is None or params.get("n", 1) != 1:
        return None
    if not callable(getattr(transport, "post_stream", None)):
        return None
    return sink


async def stream_once(
    protocol: ChatProtocol,
    endpoint: Endpoint,
    messages: Sequence[Message],
    params: dict[str, Any],
    *,
    api_key: str | None,
    transport: Any,
    timeout: float,
    sink: DeltaSink,
) -> LMResponse:
    """One streamed HTTP attempt: deltas to ``sink``, the whole answer returned."""
    name = getattr(protocol, "name", "openai")
    url, headers, body = protocol.build_request(
        api_base=endpoint.api_base,
        model_name=endpoint.model_name,
        messages=messages,
        params={**params, **stream_params(name)},
        api_key=api_key,
    )
    decoder = decoder_for(name, endpoint.model)
    try:
        async with transport.post_stream(url, headers=headers, body=body, timeout=timeout) as http:
            if http.status != 200:
                from dspex.clients.transport import HTTPResponse

                # An error answers before any event: decoded as a non-streamed error is.
                error_answer = HTTPResponse(http.status, http.headers, await http.read())
                return protocol.parse_response(error_answer, model=endpoint.model)
            async for line in http.lines():
                text = decoder.feed(line)
                if text:
                    await sink.send(text)
                if decoder.done:
                    break
        return decoder.finish()
    except LMError as error:
        if error.model is None:
            error.model = endpoint.model
        if sink.delivered:
            # Seen in part by the consumer: not retried behind its back (see the module doc).
            if not isinstance(error, LMStreamInterruptedError):
                raise LMStreamInterruptedError(
                    f"{error} (after {sink.delivered} chunk(s) of the answer were delivered)",
                    model=error.model,
                    status=error.status,
                    chunks_delivered=sink.delivered,
                ) from error
            error.chunks_delivered = sink.delivered
        raise


async def deliver_unstreamed(response: LMResponse) -> None:
    """Give the active sink an answer that did not stream (cache hit, shared, pooled,
    custom LM) as one chunk, so a listener still sees its field."""
    sink = _sink.get()
    if sink is None or sink.delivered or not response.outputs:
        return
    text = output_text(response.outputs[0])
    if text:
        await sink.send(text)


__all__ = [
    "DeltaSink",
    "StreamRouter",
    "active_router",
    "routing_streams",
    "current_sink",
    "deliver_unstreamed",
    "stream_once",
    "streaming_to",
    "wants_stream",
]
