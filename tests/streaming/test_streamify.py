"""dspex.streamify end to end: a program's fields streamed from the simulated LM over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, LMStreamInterruptedError
from dspex.simlm.server import SimLMServer
from dspex.streaming import StatusMessage, StatusMessageProvider, StreamListener, StreamResponse

MARKER_BITS = ("[[", "]]", "##", "completed", '{"', '"answer"', "<answer>", "</answer>")


def _lm(sim: SimLMServer, provider: str = "openai", cache: bool = False) -> dspex.LM:
    return dspex.LM(f"{provider}/sim", api_base=sim.url, cache=cache)


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def _chunks(items: list[Any], field: str) -> list[StreamResponse]:
    return [i for i in items if isinstance(i, StreamResponse) and i.signature_field_name == field]


class QA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.think = dspex.ChainOfThought("question -> answer")

    async def aforward(self, question: str) -> dspex.Prediction:
        return await self.think.acall(question=question)


@pytest.mark.parametrize(
    ("provider", "adapter"),
    [("openai", dspex.ChatAdapter()), ("openai", dspex.JSONAdapter()), ("anthropic", dspex.ChatAdapter())],
)
async def test_listened_fields_stream_in_chunks_without_marker_text(sim: SimLMServer, provider: str, adapter: Any) -> None:
    stream = dspex.streamify(QA(), stream_listeners=[StreamListener("answer"), StreamListener("reasoning")])
    with dspex.context(lm=_lm(sim, provider), adapter=adapter):
        items = await _collect(stream(question="What is the capital of France?"))
    prediction = items[-1]
    assert isinstance(prediction, dspex.Prediction)
    for field in ("reasoning", "answer"):
        chunks = _chunks(items, field)
        assert len(chunks) > 3, f"{field} came in {len(chunks)} chunk(s)"
        assert "".join(c.chunk for c in chunks) == prediction[field]
        assert [c.is_last_chunk for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert {c.predict_name for c in chunks} == {"think.predict"}
        for chunk in chunks:
            assert not any(bit in chunk.chunk for bit in MARKER_BITS), chunk
    # reasoning is written before the answer, and streamed in that order
    kinds = [i.signature_field_name for i in items if isinstance(i, StreamResponse)]
    assert kinds.index("answer") > max(i for i, k in enumerate(kinds) if k == "reasoning")
    assert sim.stream_stats()["streams"] == 1


async def test_a_cache_hit_still_yields_the_answer_as_one_chunk(sim: SimLMServer) -> None:
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer", allow_reuse=True)])
    with dspex.context(lm=_lm(sim, cache=True)):
        first = await _collect(stream(question="Who wrote Hamlet?"))
        second = await _collect(stream(question="Who wrote Hamlet?"))
    assert sim.stats()["total"] == 1  # the second answer came from the cache
    assert len(_chunks(first, "answer")) > 1
    [hit] = _chunks(second, "answer")
    assert hit.chunk == second[-1].answer == first[-1].answer and hit.is_last_chunk


async def test_a_listener_follows_one_answer_unless_reused(sim: SimLMServer) -> None:
    class Twice(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        async def aforward(self, question: str) -> dspex.Prediction:
            await self.predict.acall(question=question)
            return await self.predict.acall(question=question + " Again?")

    with dspex.context(lm=_lm(sim)):
        once = await _collect(dspex.streamify(Twice(), stream_listeners=[StreamListener("answer")])(question="Hi?"))
        reused = await _collect(
            dspex.streamify(Twice(), stream_listeners=[StreamListener("answer", allow_reuse=True)])(question="Hi?")
        )
    assert sum(c.is_last_chunk for c in _chunks(once, "answer")) == 1
    assert sum(c.is_last_chunk for c in _chunks(reused, "answer")) == 2


async def test_final_prediction_can_be_left_out(sim: SimLMServer) -> None:
    stream = dspex.streamify(
        dspex.Predict("question -> answer"),
        stream_listeners=[StreamListener("answer")],
        include_final_prediction_in_output_stream=False,
    )
    with dspex.context(lm=_lm(sim)):
        items = await _collect(stream(question="Why is the sky blue?"))
    assert items and all(isinstance(i, StreamResponse) for i in items)


async def test_status_messages_for_tools_and_modules(sim: SimLMServer) -> None:
    class Provider(StatusMessageProvider):
        def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
            return "Predicting..." if isinstance(instance, dspex.Predict) else None

        def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
            return f"Asking {instance.model}..."

        def lm_end_status_message(self, outputs: Any) -> str | None:
            return "The LM answered."

    class WithTool(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ask = dspex.Tool(lambda topic: f"What color is the {topic}?", name="make_question")
            self.predict = dspex.Predict("question -> answer")

        def forward(self, topic: str) -> dspex.Prediction:
            return self.predict(question=self.ask(topic=topic))

    with dspex.context(lm=_lm(sim)):
        default = await _collect(dspex.streamify(WithTool())(topic="sky"))
        custom = await _collect(dspex.streamify(WithTool(), status_message_provider=Provider())(topic="sea"))
    messages = [i.message for i in default if isinstance(i, StatusMessage)]
    assert messages == ["Running tool make_question...", "Tool finished; the LM continues with its result..."]
    assert [i.message for i in custom if isinstance(i, StatusMessage)][-3:] == [
        "Predicting...", "Asking openai/sim...", "The LM answered."
    ]
    assert isinstance(default[-1], dspex.Prediction)
    assert dspex.settings.callbacks == []  # the status callback was the run's only


async def test_a_slow_consumer_slows_the_producer_within_the_bound(sim: SimLMServer) -> None:
    sim.set_stream(chunk_chars=2)  # many small chunks
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")], buffer_size=2)
    received = 0
    with dspex.context(lm=_lm(sim)):
        async for _item in stream(question="Describe the water cycle in a few words"):
            received += 1
            await asyncio.sleep(0.002)  # the consumer is slow: that is its behaviour under test
    stats = stream.last_stats
    assert stats is not None and received > 10
    assert stats.max_queued <= 2 == stats.bound
    assert stats.producer_waits > 0  # the producer found the queue full and waited
    assert stats.items == received - 1  # all but the prediction, which comes last, outside the queue


async def test_a_consumer_that_stops_early_cancels_the_lm_stream(sim: SimLMServer) -> None:
    sim.set_stream(chunk_chars=1, chunk_delay_ms=5)  # long enough to still be streaming
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")])
    with dspex.context(lm=_lm(sim)):
        items = stream(question="Tell me about the history of the printing press")
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, StreamResponse):
                    break
    deadline = time.monotonic() + 10
    while sim.stream_stats()["client_gone"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sim.stream_stats()["client_gone"] == 1
    assert sim.stats()["in_flight"] == 0


async def test_a_stream_cut_midway_reaches_the_consumer_as_a_retryable_error(sim: SimLMServer) -> None:
    sim.set_faults(stream_cut_after=4)
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")])
    seen: list[Any] = []
    with dspex.context(lm=_lm(sim)), pytest.raises(LMStreamInterruptedError) as caught:
        async for item in stream(question="What is the tallest mountain on Earth?"):
            seen.append(item)
    assert caught.value.retryable and caught.value.chunks_delivered > 0
    assert not any(isinstance(i, dspex.Prediction) for i in seen)  # never a truncated answer
    assert sim.stats()["total"] == 1


def test_sync_streaming_of_a_sync_program(sim: SimLMServer) -> None:
    class SyncProgram(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        def __call__(self, question: str) -> dspex.Prediction:  # its own __call__: run in a thread
            return self.predict(question=question)

    with dspex.context(lm=_lm(sim)):
        stream = dspex.streamify(SyncProgram(), stream_listeners=[StreamListener("answer")], async_streaming=False)
        items = list(stream(question="Name a prime number"))
        again = list(dspex.streaming.apply_sync_streaming(
            dspex.streamify(SyncProgram(), stream_listeners=[StreamListener("answer")])(question="Name an even number")
        ))
    for run in (items, again):
        chunks = _chunks(run, "answer")
        assert len(chunks) > 1 and "".join(c.chunk for c in chunks) == run[-1].answer


def test_sync_stream_closed_early_stops(sim: SimLMServer) -> None:
    sim.set_stream(chunk_chars=1, chunk_delay_ms=5)
    with dspex.context(lm=_lm(sim)):
        stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")], async_streaming=False)
        items = stream(question="Explain photosynthesis in detail")
        first = next(i for i in items if isinstance(i, StreamResponse))
        items.close()
    assert first.chunk
    deadline = time.monotonic() + 10
    while sim.stream_stats()["client_gone"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.stream_stats()["client_gone"] == 1


async def test_listeners_must_name_a_field_of_one_predictor() -> None:
    class Two(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = dspex.Predict("question -> answer")
            self.b = dspex.Predict("question -> answer")

    with pytest.raises(ConfigurationError, match="several predictors"):
        dspex.streamify(Two(), stream_listeners=[StreamListener("answer")])
    with pytest.raises(ConfigurationError, match="no predictor"):
        dspex.streamify(Two(), stream_listeners=[StreamListener("nope")])
    program = Two()
    stream = dspex.streamify(program, stream_listeners=[StreamListener("answer", predict=program.b)])
    assert stream.stream_listeners[0].predict_name == "b"


async def test_streaming_response_writes_server_sent_events(sim: SimLMServer) -> None:
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")])
    with dspex.context(lm=_lm(sim)):
        lines = [line async for line in dspex.streaming.streaming_response(stream(question="What is 2 + 2?"))]
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    assert '"prediction"' in lines[-2] and lines[-1] == "data: [DONE]\n\n"
    assert any('"chunk"' in line for line in lines)


async def test_calls_of_one_streamed_program_each_stream_even_at_once(sim: SimLMServer) -> None:
    stream = dspex.streamify(dspex.Predict("question -> answer"), stream_listeners=[StreamListener("answer")])
    with dspex.context(lm=_lm(sim)):
        runs = await asyncio.gather(*(_collect(stream(question=f"What is {n} + {n}?")) for n in range(3)))
        again = await _collect(stream(question="What is 0 + 0?"))
    for items in [*runs, again]:
        chunks = _chunks(items, "answer")
        assert len(chunks) > 1 and "".join(c.chunk for c in chunks) == items[-1].answer


async def test_an_lm_that_cannot_stream_gives_each_field_as_one_chunk() -> None:
    lm = dspex.utils.DummyLM([{"reasoning": "Because.", "answer": "Blue"}])
    stream = dspex.streamify(dspex.ChainOfThought("question -> answer"), stream_listeners=[StreamListener("answer")])
    with dspex.context(lm=lm):
        items = await _collect(stream(question="What color is the sky?"))
    assert _chunks(items, "answer") == [StreamResponse("predict", "answer", "Blue", is_last_chunk=True)]
    assert items[-1].answer == "Blue"
