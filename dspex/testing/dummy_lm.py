"""`DummyLM`: an LM that answers from a script, for testing programs without a model.

Three ways to script it:

- a list of dicts, one per request (each dict maps output field names to values;
  a plain string is sent as the reply text itself); once the list is used up every
  request gets ``{"answer": "No more responses"}``;
- a dict mapping a piece of text to the answer for any request whose last message
  contains that text (no match: ``{"answer": "No more responses"}``);
- ``follow_examples=True``: the answer a demo in the prompt gave for the same input.

Answers are written the way the adapter expects to read them (`ChatAdapter`
sections by default, JSON for `JSONAdapter`), so the program parses them as it
would parse a real model's reply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dspex.adapters.base import END_MARKER, Adapter, section
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.values import format_value
from dspex.clients.base_lm import BaseLM
from dspex.clients.types import Message

EXHAUSTED: dict[str, Any] = {"answer": "No more responses"}
"""What a request gets once the script has nothing left for it."""

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


class DummyLM(BaseLM):
    """Answers requests from a script (see the module docstring); records history and
    usage (zero tokens) like a real LM."""

    def __init__(
        self,
        answers: Sequence[Mapping[str, Any] | str] | Mapping[str, Mapping[str, Any]],
        follow_examples: bool = False,
        reasoning: bool = False,
        adapter: Adapter | None = None,
    ) -> None:
        super().__init__("dummy", "chat", 0.0, 1000, True)
        self.answers: Mapping[str, Mapping[str, Any]] | None = (
            answers if isinstance(answers, Mapping) else None
        )
        self._queue: Iterator[Mapping[str, Any] | str] = (
            iter(()) if isinstance(answers, Mapping) else iter(list(answers))
        )
        self.follow_examples = follow_examples
        self.reasoning = reasoning
        self.adapter = adapter

    def forward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        messages = list(messages or [{"role": "user", "content": prompt or ""}])
        count = int({**self.kwargs, **kwargs}.get("n") or 1)
        choices = []
        for _ in range(count):
            message: dict[str, Any] = {"role": "assistant", "content": self._answer(messages), "tool_calls": None}
            if self.reasoning:
                message["reasoning_content"] = "Scripted reasoning."
            choices.append({"message": message, "finish_reason": "stop"})
        return {
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "model": self.model,
        }

    async def aforward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return self.forward(prompt=prompt, messages=messages, **kwargs)  # instant: no thread needed

    def format_answer(self, fields: Mapping[str, Any] | str) -> str:
        """``fields`` as a reply in the adapter's format (a string is the reply itself)."""
        if isinstance(fields, str):
            return fields
        adapter = self.adapter
        custom = getattr(adapter, "format_field_with_value", None)
        if custom is not None and not isinstance(adapter, JSONAdapter):
            try:
                return str(custom(dict(fields), role="assistant"))
            except TypeError:
                return str(custom(dict(fields)))
        if isinstance(adapter, JSONAdapter):
            import json

            return json.dumps({name: _jsonable(value) for name, value in fields.items()}, ensure_ascii=False)
        body = "\n\n".join(f"{section(name)}\n{format_value(value)}" for name, value in fields.items())
        return f"{body}\n\n{END_MARKER}"

    def get_convo(self, index: int) -> tuple[list[Message], list[str]]:
        """The messages and outputs of the ``index``-th recorded call (negative from the end)."""
        entry = self.history[index]
        return entry["messages"], entry["outputs"]

    # --- internals ---------------------------------------------------------------------------

    def _answer(self, messages: list[Message]) -> str:
        if self.follow_examples:
            found = _demo_reply(messages)
            if found is not None:
                return found
        if self.answers is not None:
            last = _text(messages[-1])
            chosen = next((fields for key, fields in self.answers.items() if key in last), EXHAUSTED)
            return self.format_answer(chosen)
        return self.format_answer(next(self._queue, EXHAUSTED))


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _demo_reply(messages: list[Message]) -> str | None:
    """The reply a demo (a user/assistant pair earlier in the prompt) gave for the same
    input as the final request, if there is one."""
    final_input = _text(messages[-1]).split("\n\n")[0]
    for request, reply in zip(reversed(messages[:-1]), reversed(messages), strict=False):
        if reply.get("role") != "assistant" or request.get("role") != "user":
            continue
        if final_input and final_input in _text(request) and _HEADER.search(_text(reply)):
            return _text(reply)
    return None


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


__all__ = ["EXHAUSTED", "DummyLM"]
