"""The OpenAI Chat Completions protocol (OpenAI, vLLM, Ollama, llama.cpp, gateways).

Native tool calling needs nothing special on the way out (``tools``,
``tool_choice`` and ``parallel_tool_calls`` are request params in this shape
already); a reply's ``message.tool_calls`` come back in the completion's output
(`dspex.clients.types.Output`).

A protocol turns (model, messages, params, key) into an HTTP request and an
HTTP response into an `LMResponse` or a typed `LMError`. It does no I/O, so it
is tested on plain bytes. The status-code mapping shared by every provider
lives here too (`error_from_response`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

from dspex.clients.transport import HTTPResponse
from dspex.clients.types import LMResponse, Message, Output, Usage, completion_output
from dspex.errors import (
    ContextWindowExceededError,
    LMAuthError,
    LMBadRequestError,
    LMError,
    LMProviderError,
    LMRateLimitError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
)

_CONTEXT_WINDOW = re.compile(
    r"context[ _]length|maximum context|context[ _]window|too many tokens|prompt is too long"
    r"|maximum (input )?length|reduce the length",
    re.IGNORECASE,
)
# OpenAI's reasoning models take max_completion_tokens instead of max_tokens.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)


class OpenAIProtocol:
    """Chat Completions: ``POST {api_base}/chat/completions`` with a bearer key."""

    name = "openai"
    default_api_base = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    api_base_envs = ("OPENAI_API_BASE", "OPENAI_BASE_URL")
    supports_n = True

    def build_request(
        self,
        *,
        api_base: str,
        model_name: str,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and JSON body of one request. ``None``-valued params are left out."""
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        body: dict[str, Any] = {"model": model_name, "messages": list(messages)}
        for name, value in params.items():
            if value is not None:
                body[name] = value
        if _REASONING_MODEL.match(model_name) and "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        if "response_format" in body:
            body["response_format"] = _response_format(body["response_format"])
        return api_base.rstrip("/") + "/chat/completions", headers, encode_json(body)

    def parse_response(self, http: HTTPResponse, *, model: str) -> LMResponse:
        """The completion in ``http``, or the `LMError` its status or body calls for."""
        if http.status != 200:
            raise error_from_response(http, model=model, key_env=self.api_key_env)
        data = decode_json(http, model=model)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LMResponseError(
                f"{model}: the response has no 'choices': {_snippet(http.body)}", model=model
            )
        outputs = [_choice_output(choice, model=model, body=http.body) for choice in choices]
        finish = [c.get("finish_reason") if isinstance(c, dict) else None for c in choices]
        usage = data.get("usage") or {}
        return LMResponse(
            outputs=outputs,
            usage=Usage(
                prompt_tokens=_int(usage.get("prompt_tokens")),
                completion_tokens=_int(usage.get("completion_tokens")),
                calls=1,
            ),
            model=model,
            finish_reasons=finish,
        )


def _choice_output(choice: Any, *, model: str, body: bytes) -> Output:
    """A choice's text, or its text and tool calls when the model asked for any."""
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some gateways return content parts
        content = "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    raw_calls = message.get("tool_calls") if isinstance(message, dict) else None
    tool_calls = _tool_calls(raw_calls, model=model, body=body)
    if tool_calls:
        return completion_output(content if isinstance(content, str) else None, tool_calls)
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        why = f"the model refused: {refusal}" if isinstance(refusal, str) else "no text and no tool calls"
        raise LMResponseError(f"{model}: a choice has no message content ({why}): {_snippet(body)}", model=model)
    return content


def _tool_calls(raw: Any, *, model: str, body: bytes) -> list[dict[str, Any]]:
    """The reply's tool calls in the OpenAI shape (``arguments`` kept as the model wrote
    them: reading them is the adapter's job, so a malformed one stays observable)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise LMResponseError(f"{model}: 'tool_calls' is not a list: {_snippet(body)}", model=model)
    calls: list[dict[str, Any]] = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise LMResponseError(
                f"{model}: a tool call has no function name: {_snippet(body)}", model=model
            )
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send the object itself
            arguments = encode_json({} if arguments is None else arguments).decode()
        calls.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    return calls


def _response_format(value: Any) -> Any:
    # A pydantic model class becomes a JSON-schema response format.
    schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema):
        return {"type": "json_schema", "json_schema": {"name": value.__name__, "schema": schema()}}
    return value


# --- shared by every protocol -------------------------------------------------


def encode_json(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode_json(http: HTTPResponse, *, model: str) -> dict[str, Any]:
    """The JSON object in a 200 body, or LMResponseError."""
    try:
        data = json.loads(http.body)
    except ValueError as exc:
        raise LMResponseError(
            f"{model}: the provider answered 200 with a body that is not JSON: {_snippet(http.body)}",
            model=model,
            status=http.status,
        ) from exc
    if not isinstance(data, dict):
        raise LMResponseError(
            f"{model}: expected a JSON object, got: {_snippet(http.body)}", model=model
        )
    return data


def error_from_response(http: HTTPResponse, *, model: str, key_env: str) -> LMError:
    """The typed error for a non-200 answer, with a message that says what to do."""
    status = http.status
    detail = error_detail(http.body)
    where = f"{model}: HTTP {status}: {detail}"
    if status == 429:
        return LMRateLimitError(
            f"{where} (rate limited; dspex retries with backoff: lower the concurrency "
            "or set rpm=/tpm= on the LM if this persists)",
            model=model,
            status=status,
            retry_after=retry_after_seconds(http.headers),
        )
    if status >= 500:
        return LMServerError(
            f"{where} (the provider failed on its side; retried automatically)",
            model=model,
            status=status,
            retry_after=retry_after_seconds(http.headers),
        )
    if status in (401, 403):
        return LMAuthError(
            f"{where} (the API key is missing, wrong or lacks access to this model: "
            f"set {key_env} or pass LM(..., api_key=...))",
            model=model,
            status=status,
        )
    if status == 408:
        return LMTimeoutError(
            f"{where} (the provider timed out the request)", model=model, status=status
        )
    if status in (400, 404, 413, 422):
        if _CONTEXT_WINDOW.search(detail):
            return ContextWindowExceededError(
                f"{where} (the prompt is too long for this model: shorten the inputs, use "
                "fewer demos, or pick a model with a larger context window)",
                model=model,
                status=status,
            )
        hint = "check the model name and api_base" if status == 404 else "check the request params"
        return LMBadRequestError(
            f"{where} ({hint}; retrying will not help)", model=model, status=status
        )
    return LMProviderError(where, model=model, status=status)


def error_detail(body: bytes) -> str:
    """The provider's own error message, from the usual JSON shapes or the raw text."""
    try:
        data = json.loads(body)
    except ValueError:
        return _snippet(body)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code") or error.get("type")
            if message:
                return f"{message} [{code}]" if code else str(message)
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
    return _snippet(body)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date)."""
    millis = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _snippet(body: bytes, limit: int = 500) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
