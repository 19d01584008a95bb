"""The Anthropic Messages protocol: ``POST {api_base}/messages``.

Differences from Chat Completions that this module absorbs:
- system messages move to the top-level ``system`` field;
- ``max_tokens`` is required (default `DEFAULT_MAX_TOKENS`);
- ``stop`` is called ``stop_sequences``;
- there is no ``n``: the LM client fans ``n > 1`` out into parallel requests;
- ``response_format`` and ``seed`` do not exist: they are left out of the body
  (adapters parse the text reply either way), with a one-time warning;
- OpenAI-style ``image_url`` content parts become Anthropic ``image`` blocks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.clients.openai_protocol import decode_json, encode_json, error_from_response
from dspex.clients.transport import HTTPResponse
from dspex.clients.types import LMResponse, Message, Usage
from dspex.errors import LMResponseError

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_UNSUPPORTED = ("response_format", "seed", "n")
_warned: set[str] = set()


class AnthropicProtocol:
    name = "anthropic"
    default_api_base = "https://api.anthropic.com/v1"
    api_key_env = "ANTHROPIC_API_KEY"
    api_base_envs = ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL")
    supports_n = False

    def build_request(
        self,
        *,
        api_base: str,
        model_name: str,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> tuple[str, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        system, turns = split_system(messages)
        body: dict[str, Any] = {"model": model_name, "messages": turns}
        if system:
            body["system"] = system
        body["max_tokens"] = DEFAULT_MAX_TOKENS
        for name, value in params.items():
            if value is None:
                continue
            if name in _UNSUPPORTED:
                _warn_once(name)
            elif name == "stop":
                body["stop_sequences"] = [value] if isinstance(value, str) else list(value)
            else:
                body[name] = value
        return api_base.rstrip("/") + "/messages", headers, encode_json(body)

    def parse_response(self, http: HTTPResponse, *, model: str) -> LMResponse:
        if http.status != 200:
            raise error_from_response(http, model=model, key_env=self.api_key_env)
        data = decode_json(http, model=model)
        blocks = data.get("content")
        texts = [
            b["text"]
            for b in blocks or ()
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        if not isinstance(blocks, list) or not texts:
            raise LMResponseError(
                f"{model}: the response has no text content: {http.body[:500]!r}", model=model
            )
        usage = data.get("usage") or {}
        # Cached prompt tokens are still prompt tokens (billed at other rates: advisory cost).
        prompt = sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return LMResponse(
            outputs=["".join(texts)],
            usage=Usage(
                prompt_tokens=prompt, completion_tokens=_int(usage.get("output_tokens")), calls=1
            ),
            model=model,
            finish_reasons=[data.get("stop_reason")],
        )


def split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """The joined system text, and the other messages converted to Anthropic content."""
    system: list[str] = []
    turns: list[Message] = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system":
            system.append(_plain_text(content))
        else:
            turns.append({**message, "content": _convert_content(content)})
    return "\n\n".join(s for s in system if s), turns


def _plain_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _convert_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return [_convert_part(part) for part in content]


def _convert_part(part: Any) -> Any:
    if not (isinstance(part, dict) and part.get("type") == "image_url"):
        return part
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image)
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _warn_once(param: str) -> None:
    if param == "n" or param in _warned:
        return  # n is handled by the LM client's fan-out, not an omission
    _warned.add(param)
    warnings.warn(
        f"dspex: the Anthropic Messages API has no '{param}' parameter; it is left out of the request",
        stacklevel=3,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
