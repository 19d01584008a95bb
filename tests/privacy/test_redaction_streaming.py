"""Streamed fields of a redacted program: the LM streams placeholders, the reader gets the
real values, and never half a placeholder."""

from __future__ import annotations

import dspex
from dspex.privacy import CREDIT_CARD, EMAIL, RedactionSession
from dspex.privacy.session import RestoringStream
from dspex.simlm import start_sim_lm
from dspex.streaming import StreamListener, StreamResponse


def test_a_placeholder_split_across_chunks_is_held_back_until_complete() -> None:
    session = RedactionSession()
    session.redact_text("jo@example.com", [EMAIL])
    stream = RestoringStream(session)
    pieces = ["write to <EM", "AIL", "_1", "> now <", "b>", " and <EMAIL_1", ">"]
    shown = [stream.feed(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    assert shown == ["write to ", "", "", "jo@example.com now ", "<b>", " and ", "jo@example.com"]
    assert "".join(shown) == "write to jo@example.com now <b> and jo@example.com"


async def test_streamed_chunks_hold_the_real_values_and_the_lm_saw_placeholders() -> None:
    ticket = "jane@example.com: refund 4111 1111 1111 1111 for bob@example.org"
    stream = dspex.streamify(dspex.Predict("ticket -> contact_email"), stream_listeners=[StreamListener("contact_email")])
    with start_sim_lm(seed=5) as server:
        lm = dspex.LM("openai/sim", api_base=server.url, cache=False)
        with dspex.context(lm=lm, redactors=[EMAIL, CREDIT_CARD]):
            items = [item async for item in stream(ticket=ticket)]
    chunks = [item.chunk for item in items if isinstance(item, StreamResponse)]
    prediction = items[-1]
    assert "".join(chunks) == prediction.contact_email
    assert "jane@example.com" in prediction.contact_email and "4111 1111 1111 1111" in prediction.contact_email
    assert not any("<EMAIL" in c or "<CREDIT" in c for c in chunks)
    sent = lm.history[-1]["messages"][-1]["content"]
    assert "<EMAIL_1>" in sent and "jane@example.com" not in sent


def test_a_stream_cut_inside_a_placeholder_shows_what_was_written() -> None:
    session = RedactionSession()
    session.redact_text("jo@example.com", [EMAIL])
    stream = RestoringStream(session)
    assert stream.feed("to <EMAIL_") == "to "
    assert stream.feed("1", last=True) == "<EMAIL_1"  # no ">": not a placeholder
