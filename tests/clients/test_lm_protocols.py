"""Protocol encode/decode and status-code mapping, on plain bytes (no I/O)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import BaseModel

from dspex.clients.anthropic_protocol import AnthropicProtocol
from dspex.clients.openai_protocol import OpenAIProtocol, retry_after_seconds
from dspex.clients.transport import HTTPResponse
from dspex.errors import (
    ContextWindowExceededError,
    LMAuthError,
    LMBadRequestError,
    LMProviderError,
    LMRateLimitError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
)

MESSAGES = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi"},
]


def http(status: int, body: Any, headers: dict[str, str] | None = None) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(status, headers or {}, raw)


# --- OpenAI ---------------------------------------------------------------------


def test_openai_request_has_url_auth_and_params() -> None:
    url, headers, body = OpenAIProtocol().build_request(
        api_base="http://x/v1/",
        model_name="gpt-4o-mini",
        messages=MESSAGES,
        params={"temperature": 0.2, "n": 2, "seed": None},
        api_key="sk-secret",
    )
    assert url == "http://x/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-secret"
    sent = json.loads(body)
    assert sent == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.2, "n": 2}


def test_openai_request_without_key_sends_no_authorization() -> None:
    _, headers, _ = OpenAIProtocol().build_request(
        api_base="http://x/v1", model_name="m", messages=MESSAGES, params={}, api_key=None
    )
    assert "Authorization" not in headers


def test_openai_reasoning_models_get_max_completion_tokens() -> None:
    _, _, body = OpenAIProtocol().build_request(
        api_base="http://x",
        model_name="o3-mini",
        messages=MESSAGES,
        params={"max_tokens": 100},
        api_key=None,
    )
    sent = json.loads(body)
    assert sent["max_completion_tokens"] == 100 and "max_tokens" not in sent


def test_openai_pydantic_response_format_becomes_json_schema() -> None:
    class Answer(BaseModel):
        text: str

    _, _, body = OpenAIProtocol().build_request(
        api_base="http://x",
        model_name="m",
        messages=MESSAGES,
        params={"response_format": Answer},
        api_key=None,
    )
    fmt = json.loads(body)["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Answer"
    assert "text" in fmt["json_schema"]["schema"]["properties"]


def test_openai_parse_outputs_usage_finish_reasons() -> None:
    body = {
        "choices": [
            {"message": {"content": "a"}, "finish_reason": "stop"},
            {"message": {"content": "b"}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    resp = OpenAIProtocol().parse_response(http(200, body), model="openai/m")
    assert resp.outputs == ["a", "b"]
    assert resp.finish_reasons == ["stop", "length"]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.calls) == (7, 3, 1)
    assert resp.model == "openai/m" and not resp.cached


def test_openai_parse_without_usage_counts_zero_tokens() -> None:
    resp = OpenAIProtocol().parse_response(
        http(200, {"choices": [{"message": {"content": "x"}}]}), model="m"
    )
    assert resp.usage.total_tokens == 0 and resp.usage.calls == 1


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"object": "chat.completion"},
        {"choices": [{"message": {"content": None}}]},
        {"choices": [{"message": {}}]},
        b"<html>gateway</html>",
        [1, 2],
    ],
)
def test_openai_200_without_content_is_response_error(body: Any) -> None:
    with pytest.raises(LMResponseError) as info:
        OpenAIProtocol().parse_response(http(200, body), model="m")
    assert info.value.retryable


# --- status mapping (shared) ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": {"message": "slow down"}}, LMRateLimitError),
        (500, {"error": {"message": "boom"}}, LMServerError),
        (502, b"bad gateway", LMServerError),
        (503, {"error": {"message": "overloaded"}}, LMServerError),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            LMServerError,
        ),
        (401, {"error": {"message": "Incorrect API key"}}, LMAuthError),
        (403, {"error": {"message": "forbidden"}}, LMAuthError),
        (400, {"error": {"message": "bad param"}}, LMBadRequestError),
        (404, {"error": {"message": "model not found"}}, LMBadRequestError),
        (422, {"detail": "unprocessable"}, LMBadRequestError),
        (408, {"error": "timeout"}, LMTimeoutError),
        (418, {"error": "teapot"}, LMProviderError),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
            ContextWindowExceededError,
        ),
        (
            400,
            {"object": "error", "message": "Too many tokens in the prompt"},
            ContextWindowExceededError,
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 210000 tokens",
                },
            },
            ContextWindowExceededError,
        ),
    ],
)
@pytest.mark.parametrize(
    "protocol", [OpenAIProtocol(), AnthropicProtocol()], ids=["openai", "anthropic"]
)
def test_status_mapping(status: int, body: Any, expected: type, protocol: Any) -> None:
    with pytest.raises(
        LMProviderError if expected is not LMTimeoutError else LMTimeoutError
    ) as info:
        protocol.parse_response(http(status, body), model="p/m")
    assert type(info.value) is expected
    assert info.value.status == status
    assert info.value.model == "p/m"
    assert str(status) in str(info.value)


def test_auth_error_names_the_env_var_to_set() -> None:
    with pytest.raises(LMAuthError, match="OPENAI_API_KEY"):
        OpenAIProtocol().parse_response(http(401, {"error": {"message": "no"}}), model="m")
    with pytest.raises(LMAuthError, match="ANTHROPIC_API_KEY"):
        AnthropicProtocol().parse_response(http(401, {"error": {"message": "no"}}), model="m")


def test_retryable_flags_follow_the_mapping() -> None:
    proto = OpenAIProtocol()
    retryable = {}
    for status in (429, 500, 401, 400):
        with pytest.raises(LMProviderError) as info:
            proto.parse_response(http(status, {}), model="m")
        retryable[status] = info.value.retryable
    assert retryable == {429: True, 500: True, 401: False, 400: False}


def test_rate_limit_error_carries_retry_after() -> None:
    with pytest.raises(LMRateLimitError) as info:
        OpenAIProtocol().parse_response(http(429, {}, {"Retry-After": "7"}), model="m")
    assert info.value.retry_after == 7.0
    with pytest.raises(LMServerError) as info2:
        OpenAIProtocol().parse_response(http(503, {}, {"Retry-After": "2.5"}), model="m")
    assert info2.value.retry_after == 2.5


def test_retry_after_forms() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"Retry-After": "-4"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    future = datetime.now(timezone.utc) + timedelta(seconds=30)
    got = retry_after_seconds({"Retry-After": format_datetime(future, usegmt=True)})
    assert got is not None and 25 <= got <= 31
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert retry_after_seconds({"Retry-After": format_datetime(past, usegmt=True)}) == 0.0


# --- Anthropic --------------------------------------------------------------------


def test_anthropic_request_moves_system_and_renames_params() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
    ]
    url, headers, body = AnthropicProtocol().build_request(
        api_base="http://x/v1",
        model_name="claude-3-5-haiku-latest",
        messages=messages,
        params={"temperature": 0.0, "stop": "END", "max_tokens": 50, "n": 1},
        api_key="sk-ant",
    )
    assert url == "http://x/v1/messages"
    assert headers["x-api-key"] == "sk-ant"
    assert headers["anthropic-version"]
    assert "Authorization" not in headers
    sent = json.loads(body)
    assert sent["system"] == "Be terse.\n\nAnswer in French."
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent["stop_sequences"] == ["END"]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.0
    assert "n" not in sent and "stop" not in sent


def test_anthropic_defaults_max_tokens_and_drops_unsupported_params() -> None:
    with pytest.warns(UserWarning, match="response_format"):
        _, _, body = AnthropicProtocol().build_request(
            api_base="http://x",
            model_name="claude",
            messages=[{"role": "user", "content": "Hi"}],
            params={"response_format": {"type": "json_object"}},
            api_key=None,
        )
    sent = json.loads(body)
    assert sent["max_tokens"] > 0
    assert "response_format" not in sent and "system" not in sent


def test_anthropic_converts_image_parts() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://img/x.png"}},
            ],
        }
    ]
    _, _, body = AnthropicProtocol().build_request(
        api_base="http://x", model_name="c", messages=messages, params={}, api_key=None
    )
    parts = json.loads(body)["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    assert parts[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert parts[2]["source"] == {"type": "url", "url": "https://img/x.png"}


def test_anthropic_parse() -> None:
    body = {
        "content": [{"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 11, "output_tokens": 2, "cache_read_input_tokens": 4},
    }
    resp = AnthropicProtocol().parse_response(http(200, body), model="anthropic/c")
    assert resp.outputs == ["Bonjour"]
    assert resp.finish_reasons == ["end_turn"]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (15, 2)


@pytest.mark.parametrize(
    "body", [{"content": []}, {"content": [{"type": "tool_use", "id": "x"}]}, {"type": "message"}]
)
def test_anthropic_200_without_text_is_response_error(body: Any) -> None:
    with pytest.raises(LMResponseError):
        AnthropicProtocol().parse_response(http(200, body), model="m")
