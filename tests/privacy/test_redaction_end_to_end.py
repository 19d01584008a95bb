"""Redaction through the whole request path, against a recording server on 127.0.0.1:
nothing personal reaches it, while the prediction returned holds the real values."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from privacy_helpers import PLACEHOLDER, RecordingServer, assert_none_in, pii_bytes, text_of

import dspex
from dspex.clients import history
from dspex.clients.cache import LMCache
from dspex.observability.hooks import add_call_observer, remove_call_observer
from dspex.privacy import CREDIT_CARD, EMAIL, IP_ADDRESS, PHONE

REDACTORS = [EMAIL, PHONE, CREDIT_CARD, IP_ADDRESS]
EMAIL_ADDR = "jane.doe@example.com"
PHONE_NO = "+1 (415) 555-0132"
CARD = "4111 1111 1111 1111"
MESSAGE = f"I am {EMAIL_ADDR}, call me on {PHONE_NO}; charge card {CARD}."
PII = pii_bytes(EMAIL_ADDR, PHONE_NO, CARD)


def lm_for(server: RecordingServer, **kwargs: Any) -> dspex.LM:
    return dspex.LM("openai/test-model", api_base=server.base_url, api_key="k", num_retries=0, **kwargs)


def test_no_byte_of_the_personal_data_reaches_the_server_and_the_prediction_has_it(
    server: RecordingServer, isolated_cache: LMCache
) -> None:
    lm = lm_for(server)
    dspex.configure(lm=lm, redactors=REDACTORS)
    prediction = dspex.Predict("message -> reply")(message=MESSAGE)

    assert len(server.raw) == 1
    assert_none_in(server.everything_received, PII)
    assert b"<EMAIL_1>" in server.everything_received
    assert prediction.reply == f"seen: {EMAIL_ADDR} {PHONE_NO} {CARD}"

    # Everything recorded on the way holds placeholders only.
    assert_none_in(text_of(lm.history), PII)
    assert_none_in(text_of(history.GLOBAL_HISTORY), PII)
    shown = io.StringIO()
    dspex.inspect_history(1, file=shown)
    assert "<EMAIL_1>" in shown.getvalue()
    assert_none_in(shown.getvalue(), PII)
    isolated_cache.flush()
    stored = b"".join(p.read_bytes() for p in Path(isolated_cache.disk_dir).rglob("*") if p.is_file())
    assert b"<EMAIL_1>" in stored
    assert_none_in(stored, PII)


def test_the_cache_key_holds_placeholders_so_another_person_hits_the_cache_and_gets_their_own_data(
    server: RecordingServer, isolated_cache: LMCache
) -> None:
    dspex.configure(lm=lm_for(server), redactors=REDACTORS)
    predict = dspex.Predict("message -> reply")
    first = predict(message="Reach me at ann@example.com")
    second = predict(message="Reach me at bob@example.org")
    assert len(server.raw) == 1  # same prompt once redacted: one request
    assert first.reply == "seen: ann@example.com"
    assert second.reply == "seen: bob@example.org"


def test_traces_and_call_observers_see_placeholders_and_the_caller_gets_real_values(
    server: RecordingServer, isolated_cache: LMCache
) -> None:
    seen: list[Any] = []

    class Recorder:
        def call_started(self, kind: str, instance: Any, inputs: dict[str, Any]) -> Any:
            seen.append((kind, inputs))
            return kind

        def call_ended(self, token: Any, outputs: Any, exception: BaseException | None) -> None:
            seen.append((token, outputs))

    class TwoSteps(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.extract = dspex.Predict("message -> reply")
            self.follow_up = dspex.Predict("reply -> answer")
            self.middle: str | None = None

        def forward(self, message: str) -> dspex.Prediction:
            first = self.extract(message=message)
            self.middle = first.reply
            return self.follow_up(reply=first.reply)

    dspex.configure(lm=lm_for(server), redactors=REDACTORS)
    program = TwoSteps()
    recorder = Recorder()
    add_call_observer(recorder)
    try:
        with dspex.context(trace=[]):
            result = program(message=MESSAGE)
            trace = list(dspex.settings.trace)
    finally:
        remove_call_observer(recorder)

    assert program.middle == "seen: <EMAIL_1> <PHONE_1> <CREDIT_CARD_1>"  # the program runs on placeholders
    assert result.answer == f"seen: {EMAIL_ADDR} {PHONE_NO} {CARD}"
    assert_none_in(server.everything_received, PII)
    assert len(trace) == 2
    assert_none_in(text_of([(inputs, pred.toDict()) for _, inputs, pred in trace]), PII)
    assert_none_in(text_of(seen), PII)
    assert any(kind == "lm" for kind, _ in seen)


def test_log_lines_hold_placeholders(
    server: RecordingServer, isolated_cache: LMCache, caplog: pytest.LogCaptureFixture
) -> None:
    dspex.configure(lm=lm_for(server), redactors=REDACTORS)
    with caplog.at_level(logging.DEBUG):
        # An int field given text: predictors log the value they got.
        dspex.Predict("count: int, message -> reply")(count=f"ask {EMAIL_ADDR}", message=MESSAGE)
    assert any("<EMAIL_1>" in r.getMessage() for r in caplog.records)
    assert_none_in("\n".join(r.getMessage() for r in caplog.records), PII)


def test_a_direct_lm_call_is_redacted_and_its_output_restored(server: RecordingServer, isolated_cache: LMCache) -> None:
    lm = lm_for(server)
    with dspex.context(redactors=REDACTORS):
        outputs = lm(f"my card is {CARD}")
    assert_none_in(server.everything_received, PII)
    assert outputs[0].startswith(f"[[ ## reply ## ]]\nseen: {CARD}\n")
    assert_none_in(text_of(lm.history), PII)


def test_redactors_are_scoped_by_context(server: RecordingServer, isolated_cache: LMCache) -> None:
    dspex.configure(lm=lm_for(server, cache=False))
    predict = dspex.Predict("message -> reply")
    with dspex.context(redactors=[EMAIL]):
        predict(message=f"mail {EMAIL_ADDR}")
    assert_none_in(server.everything_received, pii_bytes(EMAIL_ADDR))
    predict(message=f"mail {EMAIL_ADDR}")  # outside the block nothing is redacted
    assert EMAIL_ADDR.encode() in server.raw[-1]


def test_demos_holding_personal_data_are_redacted_too(server: RecordingServer, isolated_cache: LMCache) -> None:
    dspex.configure(lm=lm_for(server), redactors=REDACTORS)
    predict = dspex.Predict("message -> reply")
    predict.demos = [dspex.Example(message=f"from {EMAIL_ADDR}", reply=f"sent to {PHONE_NO}")]
    predict(message="hello")
    assert_none_in(server.everything_received, PII)


async def test_async_calls_are_redacted_and_restored(server: RecordingServer, isolated_cache: LMCache) -> None:
    dspex.configure(lm=lm_for(server), redactors=REDACTORS)
    prediction = await dspex.Predict("message -> reply").acall(message=MESSAGE)
    assert prediction.reply == f"seen: {EMAIL_ADDR} {PHONE_NO} {CARD}"
    assert_none_in(server.everything_received, PII)


class EchoingModel(dspex.BaseLM):
    """A model of the user's own (BaseLM): answers with the placeholders it was sent."""

    def __init__(self) -> None:
        super().__init__("echoing-model")
        self.seen: list[str] = []

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
        text = "\n".join(str(m["content"]) for m in messages or [])
        self.seen.append(text)
        found = " ".join(dict.fromkeys(PLACEHOLDER.findall(text)))
        answer = f"[[ ## reply ## ]]\nseen: {found}\n\n[[ ## completed ## ]]"
        return {"choices": [{"message": {"content": answer}}], "model": self.model}


def test_a_base_lm_of_ones_own_sees_placeholders_called_directly_or_by_a_program() -> None:
    model = EchoingModel()
    with dspex.context(lm=model, redactors=REDACTORS):
        prediction = dspex.Predict("message -> reply")(message=MESSAGE)
        direct = model(f"card {CARD}")
    assert prediction.reply == f"seen: {EMAIL_ADDR} {PHONE_NO} {CARD}"
    assert direct[0].startswith(f"[[ ## reply ## ]]\nseen: {CARD}")
    assert_none_in("\n".join(model.seen), PII)
    assert_none_in(text_of(model.history), PII)
