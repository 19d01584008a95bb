"""StreamListener on hand-made deltas: markers split anywhere never leak, each format's field
text comes out whole, and the last chunk is flagged."""

from __future__ import annotations

import asyncio

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.streaming import StreamListener, StreamResponse
from dspex.utils.asyncify import asyncify, syncify


def _run(adapter: object, deltas: list[str], field: str = "answer", *, finalize: bool = True) -> list[StreamResponse]:
    listener = StreamListener(field, predict_name="p")
    listener.begin(adapter)
    out = [r for d in deltas if (r := listener.receive(d)) is not None]
    if finalize and (tail := listener.finalize()) is not None:
        out.append(tail)
    return out


def _every_split(text: str) -> list[list[str]]:
    """The text cut into pieces of each size 1..7: markers fall across deltas everywhere."""
    return [[text[i : i + size] for i in range(0, len(text), size)] for size in range(1, 8)]


CHAT = "[[ ## reasoning ## ]]\nIt is [1] in a list.\n\n[[ ## answer ## ]]\nParis, the [capital].\n\n[[ ## completed ## ]]"


@pytest.mark.parametrize("deltas", _every_split(CHAT))
def test_chat_field_text_is_exact_whatever_the_splits(deltas: list[str]) -> None:
    chunks = _run(dspex.ChatAdapter(), deltas)
    assert "".join(c.chunk for c in chunks) == "Paris, the [capital]."
    assert [c.is_last_chunk for c in chunks][-1] is True and sum(c.is_last_chunk for c in chunks) == 1
    assert all("[[" not in c.chunk and "##" not in c.chunk for c in chunks)
    reasoning = _run(dspex.ChatAdapter(), deltas, "reasoning")
    assert "".join(c.chunk for c in reasoning) == "It is [1] in a list."


def test_chat_tokens_come_out_as_they_arrive() -> None:
    deltas = ["[[", " ##", " answer", " ##", " ]]\n\n", "To", " get", " to", " the", " other", " side", "!\n\n[[ ##", " completed", " ##", " ]]"]
    chunks = _run(dspex.ChatAdapter(), deltas)
    assert [c.chunk for c in chunks] == ["To", " get", " to", " the", " other", " side", "!", ""]
    assert chunks[-1].is_last_chunk and chunks[0].predict_name == "p"


def test_a_reply_without_the_completed_marker_is_flushed_at_the_end() -> None:
    chunks = _run(dspex.ChatAdapter(), ["[[ ## answer ## ]]\n", "Forty", " two  \n"])
    assert "".join(c.chunk for c in chunks) == "Forty two" and chunks[-1].is_last_chunk


def test_a_whole_answer_at_once_is_one_chunk() -> None:
    listener = StreamListener("answer", predict_name="p")
    listener.begin(dspex.ChatAdapter())
    chunk = listener.receive("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    assert chunk == StreamResponse("p", "answer", "Paris", is_last_chunk=True)
    assert listener.cache_hit and listener.stream_start and listener.stream_end


XML = "<reasoning>\nBecause a < b.\n</reasoning>\n<answer>\nx < y </ z\n</answer>"


@pytest.mark.parametrize("deltas", _every_split(XML))
def test_xml_field_text_is_exact_whatever_the_splits(deltas: list[str]) -> None:
    chunks = _run(dspex.XMLAdapter(), deltas)
    assert "".join(c.chunk for c in chunks) == "x < y </ z"
    assert all("</answer" not in c.chunk and "<answer" not in c.chunk for c in chunks)


JSON = '{"reasoning": "say \\"hi\\" \\u00e9t\\u00e9, then", "answer": "line1\\nline2 \\\\ done", "score": {"a": [1, 2]}}'


@pytest.mark.parametrize("deltas", _every_split(JSON))
def test_json_field_values_are_decoded_whatever_the_splits(deltas: list[str]) -> None:
    adapter = dspex.JSONAdapter()
    assert "".join(c.chunk for c in _run(adapter, deltas)) == "line1\nline2 \\ done"
    assert "".join(c.chunk for c in _run(adapter, deltas, "reasoning")) == 'say "hi" été, then'
    assert "".join(c.chunk for c in _run(adapter, deltas, "score")) == '{"a": [1, 2]}'


def test_a_listener_needs_a_format_it_can_read() -> None:
    class Other(dspex.Adapter):
        pass

    with pytest.raises(ConfigurationError, match="ChatAdapter, JSONAdapter or XMLAdapter"):
        StreamListener("answer").begin(Other())


def test_could_form_end_identifier() -> None:
    listener = StreamListener("answer")
    assert listener._could_form_end_identifier("text [[ #", "ChatAdapter")
    assert not listener._could_form_end_identifier("hello world", "ChatAdapter")
    assert listener._could_form_end_identifier("text </", "XMLAdapter")
    assert listener._could_form_end_identifier('text "}', "JSONAdapter")


# --- asyncify and syncify --------------------------------------------------------------


async def test_asyncify_runs_in_a_thread_with_the_callers_settings() -> None:
    import threading

    seen: dict[str, object] = {}

    def program(x: int) -> int:
        seen["thread"] = threading.current_thread()
        seen["adapter"] = dspex.settings.adapter
        return x * 2

    adapter = dspex.JSONAdapter()
    with dspex.context(adapter=adapter):
        results = await asyncio.gather(*(asyncify(program)(i) for i in range(3)))
    assert results == [0, 2, 4]
    assert seen["thread"] is not threading.main_thread() and seen["adapter"] is adapter


def test_syncify_gives_an_async_program_a_forward() -> None:
    class Async(dspex.Module):
        async def aforward(self, x: int) -> int:
            await asyncio.sleep(0)
            return x + 1

    wrapped = syncify(Async(), in_place=False)
    assert isinstance(wrapped, dspex.Module) and wrapped(x=1) == 2
    program = Async()
    assert syncify(program) is program and program.forward(x=2) == 3
    assert dspex.asyncify is asyncify and dspex.syncify is syncify
