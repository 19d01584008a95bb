"""Streamed LM requests over real HTTP (the simulated LM on 127.0.0.1), and the decoders on bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import dspex
from dspex.clients.stream_decode import AnthropicStreamDecoder, OpenAIStreamDecoder
from dspex.clients.streaming import DeltaSink, streaming_to
from dspex.errors import LMResponseError, LMStreamInterruptedError
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer

MESSAGES = [{"role": "user", "content": "Say hello to the whole wide world, please"}]


class Collect(DeltaSink):
    def __init__(self) -> None:
        super().__init__()
        self.deltas: list[str] = []

    async def receive(self, text: str) -> None:
        self.deltas.append(text)


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=3) as server:
        yield server


@pytest.fixture(autouse=True)
def _own_cache(isolated_cache: object) -> None:
    """Every test here gets an empty cache of its own (the clients' fixture)."""


async def _streamed(lm: dspex.LM, messages: list[dict[str, str]] = MESSAGES) -> tuple[Collect, dspex.clients.types.LMResponse]:
    sink = Collect()
    with streaming_to(sink):
        response = await lm.acomplete(messages)
    return sink, response


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_streamed_answer_arrives_in_deltas_that_add_up_to_the_whole(sim: SimLMServer, provider: str) -> None:
    lm = dspex.LM(f"{provider}/sim", api_base=sim.url, cache=False)
    plain = await lm.acomplete(MESSAGES)
    sink, streamed = await _streamed(lm)
    assert len(sink.deltas) > 3
    assert "".join(sink.deltas) == streamed.outputs[0] == plain.outputs[0]
    # usage comes with the last events, as for a plain answer
    assert streamed.usage.completion_tokens == plain.usage.completion_tokens > 0
    assert streamed.usage.prompt_tokens == plain.usage.prompt_tokens > 0
    assert streamed.finish_reasons == plain.finish_reasons
    assert sim.stream_stats()["streams"] == 1
    # recorded like any request: history and usage totals
    assert lm.history[-1]["outputs"] == [streamed.outputs[0]]
    assert lm.usage.calls == 2


async def test_chunk_size_is_configurable(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False)
    sim.set_stream(chunk_chars=3)
    sink, response = await _streamed(lm)
    assert all(len(d) == 3 for d in sink.deltas[:-1])
    assert "".join(sink.deltas) == response.outputs[0]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stream_cut_midway_is_a_retryable_error_never_a_short_answer(sim: SimLMServer, provider: str) -> None:
    lm = dspex.LM(f"{provider}/sim", api_base=sim.url, cache=True, num_retries=3)
    sim.set_faults(stream_cut_after=2)
    with pytest.raises(LMStreamInterruptedError) as caught:
        await _streamed(lm)
    error = caught.value
    assert error.retryable and error.chunks_delivered == 2
    # the consumer saw two chunks: no silent second attempt behind its back
    assert sim.stats()["total"] == 1
    assert sim.stream_stats()["cut"] == 1
    # and the partial answer was not cached: the next request goes to the LM
    sim.set_faults()
    sink, response = await _streamed(lm)
    assert "".join(sink.deltas) == response.outputs[0] and not response.cached


async def test_a_stream_cut_before_any_chunk_reached_the_consumer_is_retried(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False, num_retries=2)
    lm.retry_policy = type(lm.retry_policy)(num_retries=2, base=0.0)
    sim.set_faults(stream_cut_after=0, stream_cut_first=1)  # the first attempt dies before any text
    sink, response = await _streamed(lm)
    assert sim.stats()["total"] == 2 and sim.stream_stats()["cut"] == 1
    assert "".join(sink.deltas) == response.outputs[0]


async def test_an_error_status_on_a_streamed_request_is_the_usual_typed_error(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False, num_retries=0)
    sim.set_faults(fail_first=1, fail_status=500)
    with pytest.raises(dspex.errors.LMServerError):
        await _streamed(lm)


async def test_n_above_one_is_not_streamed(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False)
    sink = Collect()
    with streaming_to(sink):
        response = await lm.acomplete(MESSAGES, n=2, temperature=0.9)
    assert len(response.outputs) == 2 and sink.deltas == []
    assert sim.stream_stats()["streams"] == 0


# --- decoders on bytes --------------------------------------------------------------


def _data(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def test_openai_decoder_assembles_text_tool_calls_and_usage() -> None:
    decoder = OpenAIStreamDecoder("m")
    lines = [
        _data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        b"",
        _data({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        _data({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        _data({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}}]}),
        _data({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]}),
        _data({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        _data({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}),
        b"data: [DONE]",
    ]
    texts = [decoder.feed(line) for line in lines]
    assert "".join(texts) == "Hello"
    response = decoder.finish()
    assert response.outputs == [{"text": "Hello", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}]
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 7)
    assert response.finish_reasons == ["tool_calls"]


def test_openai_decoder_without_done_is_interrupted_and_bad_json_is_a_response_error() -> None:
    decoder = OpenAIStreamDecoder("m")
    decoder.feed(_data({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}))
    with pytest.raises(LMStreamInterruptedError):
        decoder.finish()
    with pytest.raises(LMResponseError):
        OpenAIStreamDecoder("m").feed(b"data: {not json")


def test_anthropic_decoder_reads_blocks_and_needs_message_stop() -> None:
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "there"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
    ]
    decoder = AnthropicStreamDecoder("m")
    text = "".join(decoder.feed(line) for e in events for line in (b"event: " + e["type"].encode(), _data(e)))
    assert text == "Hi there"
    with pytest.raises(LMStreamInterruptedError):
        decoder.finish()
    decoder.feed(_data({"type": "message_stop"}))
    response = decoder.finish()
    assert response.outputs == ["Hi there"] and response.usage.prompt_tokens == 9
    assert response.usage.completion_tokens == 4 and response.finish_reasons == ["end_turn"]


async def test_streamed_requests_spend_the_run_budget_like_any_request(sim: SimLMServer) -> None:
    from dspex.clients.budget import CallBudget, budget_scope
    from dspex.errors import BudgetExceededError

    lm = dspex.LM("openai/sim", api_base=sim.url, cache=False)
    budget = CallBudget(max_calls=1)
    with budget_scope(budget):
        sink, _ = await _streamed(lm)
        assert sink.deltas
        with pytest.raises(BudgetExceededError):
            await _streamed(lm, [{"role": "user", "content": "another question"}])
    assert sim.stats()["total"] == 1


async def test_the_in_process_sim_transport_streams_too() -> None:
    from dspex.simlm import SimTransport

    transport = SimTransport(seed=3)
    lm = dspex.LM("anthropic/sim", api_base=transport.url, transport=transport, cache=False, num_retries=0)
    sink, response = await _streamed(lm)
    assert len(sink.deltas) > 3 and "".join(sink.deltas) == response.outputs[0]
    transport.set_faults(stream_cut_after=1)
    with pytest.raises(LMStreamInterruptedError):
        await _streamed(lm, [{"role": "user", "content": "once more"}])
    assert transport.core.stream_counters.cut == 1
