"""Helpers of the privacy tests: a recording OpenAI-compatible server on 127.0.0.1.

It keeps the raw bytes of every request it receives and answers in the chat
adapter's format: each output field it knows (``server.fields``; the chat adapter
ignores the others) gets "seen: " and the placeholders of the last user message, so
a test can follow a placeholder out and back. It runs on its own loop in a thread, so
sync and async tests can call it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from aiohttp import web

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class RecordingServer:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.fields = ["reply", "answer"]
        # True: a model that is right only when shown demos (a request of one user turn
        # gets "seen: nothing"), so an optimizer prefers a program with demos
        self.needs_demos = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def everything_received(self) -> bytes:
        return b"\n".join(self.raw)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw + b"\n" + str(request.rel_url).encode())
        body = json.loads(raw)
        users = [m for m in body["messages"] if m["role"] == "user"]
        content = users[-1]["content"] if users else ""
        text = content if isinstance(content, str) else json.dumps(content)
        seen = list(dict.fromkeys(PLACEHOLDER.findall(text)))
        if self.needs_demos and len(users) < 2:
            seen = ["nothing"]
        sections = "".join(f"[[ ## {name} ## ]]\nseen: {' '.join(seen)}\n\n" for name in self.fields)
        answer = f"{sections}[[ ## completed ## ]]"
        completion = {
            "id": "cmpl-privacy",
            "object": "chat.completion",
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return web.json_response(completion)


def pii_bytes(*values: str) -> list[bytes]:
    """Each value and its digits alone (a card or phone number without its separators)."""
    forms: list[bytes] = []
    for value in values:
        forms.append(value.encode())
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 7:
            forms.append(digits.encode())
    return forms


def assert_none_in(data: bytes | str, forms: list[bytes]) -> None:
    blob = data.encode() if isinstance(data, str) else data
    leaked = [f.decode() for f in forms if f in blob]
    assert not leaked, f"personal data leaked: {leaked}"


def text_of(value: Any) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)
