"""Logs and events go through the one redaction rule (`dspex.observability.redact`): with
redactors configured they show placeholders, inside a program call the ones the LM saw."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.observability import events
from dspex.observability.logs import configure_logging, reset_logging
from dspex.privacy import EMAIL, PHONE, RedactionSession


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging(level=logging.DEBUG, stream=buffer)
    yield buffer
    reset_logging()


def test_dspex_log_lines_show_placeholders(stream: io.StringIO) -> None:
    log = logging.getLogger("dspex.test_privacy")
    with dspex.context(redactors=[EMAIL, PHONE]):
        log.warning("example %s failed for %s", "jo@example.com", {"phone": "+1 415 555 0132"})
    log.warning("without redactors: jo@example.com")
    shown = stream.getvalue()
    assert "example <EMAIL_1> failed for {'phone': '<PHONE_1>'}" in shown
    assert "without redactors: jo@example.com" in shown


def test_inside_a_program_call_logs_use_the_placeholders_the_lm_saw(stream: io.StringIO) -> None:
    session = RedactionSession()
    session.redact_text("ann@example.com bob@example.com", [EMAIL])
    with dspex.context(redactors=[EMAIL]), session.active():
        logging.getLogger("dspex.test_privacy").warning("bob@example.com")
    assert "<EMAIL_2>" in stream.getvalue()


def test_events_show_placeholders() -> None:
    got: list[Any] = []
    with events.subscribe(got.append, ["privacy.*"]), dspex.context(redactors=[EMAIL]):
        events.emit("privacy.test", "tests", who="jo@example.com", nested={"to": ["al@example.org"]})
    # one event, one numbering: two addresses, two placeholders
    assert [(e.data["who"], e.data["nested"]) for e in got] == [("<EMAIL_1>", {"to": ["<EMAIL_2>"]})]
