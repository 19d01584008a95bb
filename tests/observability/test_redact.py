"""What counts as a secret, and what must be left alone."""

from __future__ import annotations

import pytest

from dspex.observability import is_secret_name, redact

MASKED = [
    ("key sk-proj-abcdefghijklmnop1234", "key [REDACTED]"),
    ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "[REDACTED]"),
    ("Authorization: Bearer abcdef123456789", "Authorization: Bearer [REDACTED]"),
    ("OPENAI_API_KEY=0123456789abcdef0123456789abcdef", "OPENAI_API_KEY=[REDACTED]"),
    ('{"api_key": "ZXhhbXBsZWJhc2U2NHRva2Vu"}', '{"api_key": "[REDACTED]"}'),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [REDACTED]"),
    ("secret: dGhpcyBpcyBhIHNlY3JldA==", "secret: [REDACTED]"),
    ("AIzaSyA1234567890abcdefghijklmnopqrstuv in url", "[REDACTED] in url"),
]

KEPT = [
    "input_tokens=12345 output_tokens=678",
    "monkey=abcdefabcdefabcdefabcdef",
    "run bootstraprs-abc1234567 resumed",
    "token limit reached",
    "the key is short: abc123",
    "task-0123456789abcdef0123 finished",
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "name", ["api_key", "OPENAI_API_KEY", "authorization", "auth_token", "client_secret", "x.token"]
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["gen_ai.usage.input_tokens", "model", "max_tokens", "run_id", "tokenizer"]
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_one_rule_for_structured_records_shown_and_stored() -> None:
    from dspex.observability.redact import redact_data, without_secrets

    record = {
        "max_tokens": 512,
        "usage": {"total_tokens": 90, "prompt_tokens": 60},
        "api_key": "sk-proj-abcdefghijklmnop1234",
        "lm": {"model": "openai/x", "OPENAI_API_KEY": "x", "auth_token": "y"},
        "note": "sent with Bearer abcdef123456789",
        "demos": [{"question": "q", "password": "p"}],
    }
    shown = redact_data(record)
    assert shown["max_tokens"] == 512 and shown["usage"] == {"total_tokens": 90, "prompt_tokens": 60}
    assert shown["api_key"] == "[REDACTED]"
    assert shown["lm"] == {"model": "openai/x", "OPENAI_API_KEY": "[REDACTED]", "auth_token": "[REDACTED]"}
    assert shown["note"] == "sent with Bearer [REDACTED]"
    stored = without_secrets(record)
    assert stored["max_tokens"] == 512 and stored["usage"]["total_tokens"] == 90
    assert "api_key" not in stored and stored["lm"] == {"model": "openai/x"}
    assert stored["demos"] == [{"question": "q"}]


def test_events_keep_token_counts_and_mask_keys() -> None:
    from dspex.observability.events import EventBus

    bus = EventBus()
    bus.subscribe(lambda event: None)
    event = bus.emit("lm.request", "test", max_tokens=512, api_key="sk-abcdefghijklmnopqrstu")
    assert event is not None
    assert event.data["max_tokens"] == 512 and event.data["api_key"] == "[REDACTED]"
