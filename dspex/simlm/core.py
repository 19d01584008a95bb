"""The simulated LM's request handling, independent of sockets.

`SimCore.handle(method, path, headers, body)` is the whole server: the aiohttp
app (`server.py`) and the in-process `SimTransport` both call it, so they share
behaviour, faults and stats. It speaks the OpenAI chat-completions API and the
Anthropic Messages API, plus `/stats` and `/admin/*` for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dspex.errors import SimLMRequestError
from dspex.simlm import oracle, retrieval, streaming, tool_calls
from dspex.simlm.faults import Decision, FaultConfig, FaultInjector
from dspex.simlm.finetuning import FineTunes
from dspex.simlm.oracle import OracleConfig
from dspex.simlm.prompt import Message, parse
from dspex.simlm.protocols import (
    PROTOCOLS,
    Choice,
    CompletionRequest,
    error_response,
    json_response,
    models_response,
)
from dspex.simlm.stats import Stats

DEFAULT_MODEL = "sim-lm"


@dataclass(frozen=True, slots=True)
class SimResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: a streamed answer: the HTTP layer writes its events instead of ``body``
    stream: streaming.StreamPlan | None = None


class SimCore:
    """State and behaviour of one simulated LM: config, faults, stats."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        oracle_config: OracleConfig | None = None,
        api_key: str | None = None,
    ) -> None:
        self.seed = seed
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.oracle_config = oracle_config or OracleConfig()
        self.api_key = api_key
        self.stats = Stats()
        self.faults = FaultInjector(to_fault_config(faults), seed=seed)
        self.finetunes = FineTunes()
        self.stream_settings = streaming.StreamSettings()
        self.stream_counters = streaming.StreamCounters()

    # --- control --------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | Mapping[str, Any] | None) -> FaultConfig:
        config = to_fault_config(faults)
        self.faults.set(config)
        return config

    def stats_snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()

    def reset_stats(self) -> None:
        self.stats.reset()

    # --- requests -------------------------------------------------------------

    async def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> SimResponse:
        """Answer one HTTP request (``path`` may carry a query string)."""
        path, _, query = path.partition("?")
        route = (method.upper(), path.rstrip("/") or "/")
        control = self._control(route, body)
        if control is not None:
            return control
        self.stats.begin(route[1])
        status: int | None = None
        try:
            try:
                if retrieval.handles(route):  # embeddings and passage search
                    response = await retrieval.serve(self, route, headers, body, query)
                else:
                    response = await self._serve(route, headers, body)
            except Exception as exc:  # a simulator bug must still answer, and be counted
                response = _error("openai", 500, f"internal simulator error: {exc!r}")
            status = response.status
            return response
        finally:
            # status stays None when the caller gave up (cancelled) before an answer.
            self.stats.end(status)

    def _control(self, route: tuple[str, str], body: bytes) -> SimResponse | None:
        """Stats and admin endpoints: not counted, never faulted."""
        if route == ("GET", "/stats"):
            return _ok(self.stats.snapshot())
        if route == ("POST", "/admin/reset"):
            self.stats.reset()
            return _ok({"ok": True})
        if route == ("POST", "/admin/finetune"):
            # {"fail_next": N}: the next N fine-tuning jobs fail while running.
            self.finetunes.fail_next = int(json.loads(body or b"{}").get("fail_next", 0))
            return _ok({"fail_next": self.finetunes.fail_next})
        if route[1] == "/admin/stream":
            return self._stream_control(route[0], body)
        if route == ("GET", "/admin/faults"):
            return _ok(self.faults.config.model_dump())
        if route == ("POST", "/admin/faults"):
            try:
                config = FaultConfig.model_validate_json(body or b"{}")
            except ValidationError as exc:
                return _error(
                    "openai", 400, f"invalid fault config: {exc.errors(include_url=False)}"
                )
            self.faults.set(config)
            return _ok(config.model_dump())
        return None

    def _stream_control(self, method: str, body: bytes) -> SimResponse:
        """``GET /admin/stream``: chunking and counters; ``POST``: new chunking settings."""
        if method == "POST":
            try:
                self.stream_settings = streaming.StreamSettings.model_validate_json(body or b"{}")
            except ValidationError as exc:
                return _error("openai", 400, f"invalid stream settings: {exc.errors(include_url=False)}")
        return _ok({**self.stream_settings.model_dump(), **self.stream_counters.snapshot()})

    async def _serve(
        self, route: tuple[str, str], headers: Mapping[str, str], body: bytes
    ) -> SimResponse:
        protocol = PROTOCOLS.get(route)
        if self.finetunes.handles(route[1]):
            if not self._authorized(headers):
                return _error("openai", 401, "invalid or missing API key")
            status, payload = self.finetunes.handle(route[0], route[1], dict(headers), body)
            return SimResponse(status, {"Content-Type": "application/json"}, json_response(payload))
        if route == ("GET", "/v1/models"):
            if self.faults.outage_active():
                return _error("openai", 503, "the simulated LM is in an outage")
            return _ok(models_response(DEFAULT_MODEL))
        if protocol is None:
            return _error("openai", 404, f"no route for {route[0]} {route[1]}")
        if not self._authorized(headers):
            return _error(protocol.name, 401, "invalid or missing API key")
        try:
            request = protocol.parse(body)
        except SimLMRequestError as exc:
            return _error(protocol.name, 400, str(exc))
        limit = self.faults.config.context_window_tokens
        if limit is not None:
            prompt_size = sum(tokens(text) + 3 for _, text in request.messages)
            if prompt_size > limit:
                return _error(
                    protocol.name,
                    400,
                    f"This model's maximum context length is {limit} tokens, but the prompt has "
                    f"{prompt_size} tokens (context_length_exceeded). Reduce the length of the messages.",
                )
        key = hashlib.blake2b(body, digest_size=16).digest()
        decision = self.faults.decide(key)
        if decision.kind is not None:
            self.stats.faults[decision.kind] += 1
        await self._delay(key, decision)
        if decision.status is not None:
            return _error(
                protocol.name, decision.status, _fault_message(decision), decision.retry_after
            )
        self.stats.received_media(request.media)
        choices = self._complete(request, key, decision.attempt)
        prompt_tokens = sum(tokens(text) + 3 for _, text in request.messages)
        completion_tokens = sum(
            tokens(c.text) + sum(tokens(call.arguments_text) for call in c.tool_calls) for c in choices
        )
        self.stats.completed(len(choices), prompt_tokens, completion_tokens)
        payload = protocol.render(
            request, choices, key.hex()[:24], prompt_tokens, completion_tokens
        )
        stream, include_usage = streaming.requested(body)
        if stream:
            plan = streaming.plan(
                protocol.name, payload, self.stream_settings, include_usage=include_usage,
                cut_after=self.faults.stream_cut(decision.attempt), counters=self.stream_counters,
            )
            return SimResponse(200, {"Content-Type": "text/event-stream"}, b"", plan)
        return _ok(payload)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self.api_key is None:
            return True
        lowered = {k.lower(): v for k, v in headers.items()}
        return self.api_key in (
            lowered.get("x-api-key"),
            lowered.get("authorization", "").removeprefix("Bearer "),
        )

    async def _delay(self, key: bytes, decision: Decision) -> None:
        seconds = self.latency_ms / 1000.0 + decision.hang
        if self.jitter_ms:
            seconds += self.faults.draw(key, decision.attempt, "jitter") * self.jitter_ms / 1000.0
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _complete(self, request: CompletionRequest, key: bytes, attempt: int) -> list[Choice]:
        digest = messages_digest(request.messages)
        if request.tool_turns.tools:
            self.stats.tool_requests += 1
            native = tool_calls.native_reply(
                request.messages,
                request.tool_turns,
                json_requested=request.json_requested,
                schema=request.schema,
                rng=self._rng(digest, request, 0),
                config=self.oracle_config,
                call_key=key,
            )
            if native is not None:
                return [self._native_choice(*native, key, attempt, i, request) for i in range(request.n)]
        prompt = parse(
            request.messages, json_requested=request.json_requested, schema=request.schema
        )
        config = self.oracle_config
        learned = self.finetunes.knowledge(request.model)
        if learned:  # a model this server fine-tuned knows what it was trained on
            config = dataclasses.replace(config, **learned)
        choices = []
        for index in range(request.n):
            text = oracle.reply(prompt, self._rng(digest, request, index), config)
            choices.append(self._finish(text, request, key, attempt, index))
        return choices

    def _native_choice(
        self,
        text: str | None,
        calls: tuple[tool_calls.NativeCall, ...],
        key: bytes,
        attempt: int,
        index: int,
        request: CompletionRequest,
    ) -> Choice:
        """A reply to a tool request: its tool calls (a malformed-content fault spoils their
        arguments), or the text answer after tool results."""
        if not calls:
            return self._finish(text or "", request, key, attempt, index)
        self.stats.tool_calls += len(calls)
        fault = self.faults.content_fault(key, attempt, index)
        if fault == "malformed":
            self.stats.faults[fault] += 1
            calls = tuple(tool_calls.spoiled(call) for call in calls)
        return Choice(text or "", "tool_calls", calls)

    def _finish(
        self, text: str, request: CompletionRequest, key: bytes, attempt: int, index: int
    ) -> Choice:
        """Apply content faults and max_tokens to one completion's text."""
        finish = "stop"
        fault = self.faults.content_fault(key, attempt, index)
        if fault is not None:
            self.stats.faults[fault] += 1
        if fault == "malformed":
            text = malformed(text)
        elif fault == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "length"
        if request.max_tokens is not None and tokens(text) > request.max_tokens:
            text, finish = text[: request.max_tokens * 4], "length"
        return Choice(text, finish)

    def _rng(self, digest: bytes, request: CompletionRequest, index: int) -> random.Random:
        """The RNG of one completion: fixed by (seed, messages, temperature, index, request seed)."""
        head = f"{self.seed}|{request.temperature!r}|{request.seed}|{index}|".encode()
        value = hashlib.blake2b(head + digest, digest_size=8).digest()
        return random.Random(int.from_bytes(value, "big"))


def to_fault_config(faults: FaultConfig | Mapping[str, Any] | None) -> FaultConfig:
    if faults is None:
        return FaultConfig()
    if isinstance(faults, FaultConfig):
        return faults
    return FaultConfig.model_validate(dict(faults))


def messages_digest(messages: list[Message]) -> bytes:
    """A canonical digest of a conversation (roles and texts only)."""
    h = hashlib.blake2b(digest_size=16)
    for role, text in messages:
        h.update(role.encode())
        h.update(b"\x1f")
        h.update(text.encode())
        h.update(b"\x1e")
    return h.digest()


def tokens(text: str) -> int:
    """Deterministic token estimate: about four characters per token."""
    return (len(text) + 3) // 4


def malformed(text: str) -> str:
    """A reply that ignores the format: no section markers, not JSON."""
    words = " ".join(
        text.replace("[[", " ")
        .replace("]]", " ")
        .replace("#", " ")
        .replace("{", " ")
        .replace("}", " ")
        .split()[:12]
    )
    return f"Sure! Here is what I think, in my own words: {words}"


def _fault_message(decision: Decision) -> str:
    return {
        429: "rate limit reached for requests (simulated)",
        503: "the simulated LM is in an outage",
    }.get(decision.status or 0, f"simulated failure ({decision.kind})")


def _ok(payload: Any) -> SimResponse:
    return SimResponse(200, {"Content-Type": "application/json"}, json_response(payload))


def _error(
    protocol: str, status: int, message: str, retry_after: float | None = None
) -> SimResponse:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = _seconds_text(retry_after)
    return SimResponse(status, headers, json_response(error_response(protocol, status, message)))


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"
