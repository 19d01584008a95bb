"""`BaseLM`: the class to subclass for a language model dspex does not ship.

Write ``forward(prompt=None, messages=None, **kwargs)`` returning an OpenAI-style
chat completion (an object or a dict with ``choices[i].message.content``, optional
``message.tool_calls``, ``finish_reason``, ``usage`` and ``model``), and optionally ``aforward`` for a
natively async model; Predict and the adapters then call it like any other LM
(they use `acomplete`, which this class builds on ``aforward``). A subclass that
overrides ``__call__`` (returning a list of output texts) is called through it,
in a worker thread, as DSPy calls every LM.

Calls are recorded in ``lm.history`` and the global history and counted in the
usage of the prediction they serve, as for `dspex.LM`.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy as copy_module
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.clients.history import GLOBAL_HISTORY, MAX_HISTORY, make_entry, record
from dspex.clients.types import LMResponse, Message, Output, Usage, completion_output
from dspex.clients.usage import record_usage
from dspex.errors import ConfigurationError
from dspex.observability.hooks import observed_lm_call
from dspex.privacy.session import redacted_lm_call, redacted_sync_lm_call

LM_CLASS_STATE_KEY = "_dspex_lm_class"
"""The key of a saved LM state that names its class (``module.QualName``), so a program
saved with a custom LM can be loaded with the same class (only when trusted)."""

# Request options that steer dspex itself (the cache, the rollout salt): a model
# written by a user never sees them.
_DSPEX_OPTIONS = ("cache", "rollout_id")


class BaseLM:
    """Subclass and override ``forward`` (and ``aforward``, for a native async model)."""

    #: Predict reserves the run budget for this LM (it does not reserve itself)
    reserves_budget = False
    #: it adds each call's usage to the active trackers itself (Predict must not again)
    records_usage = True

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float = 0.0,
        max_tokens: int = 1000,
        cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if model_type != "chat":
            raise ConfigurationError(
                f"{type(self).__name__}(model_type={model_type!r}): only 'chat' models are supported"
            )
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, **kwargs}
        self.history: list[dict[str, Any]] = []

    @property
    def supports_function_calling(self) -> bool:
        """Whether requests may carry native ``tools`` (override to return True when
        ``forward`` passes them on and returns ``message.tool_calls``)."""
        return False

    # --- what a subclass writes ------------------------------------------------------------

    def forward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> Any:
        """Answer one request: an OpenAI-style chat completion (object or dict)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override forward(prompt=None, messages=None, **kwargs) "
            "(or aforward for an async model) to answer requests"
        )

    async def aforward(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> Any:
        """Async `forward`; by default runs ``forward`` in a worker thread (with this
        context's settings), so a blocking model does not stall the event loop."""
        context = contextvars.copy_context()
        return await asyncio.to_thread(
            context.run, lambda: self.forward(prompt=prompt, messages=messages, **kwargs)
        )

    # --- what dspex calls ------------------------------------------------------------------

    @redacted_lm_call  # with redactors configured, the model sees placeholders only
    @observed_lm_call  # callbacks' on_lm_start/on_lm_end see each call, as for dspex.LM
    async def acomplete(self, messages: Sequence[Message], **kwargs: Any) -> LMResponse:
        """One request, as the adapters send it (the `dspex.LM` interface).

        A subclass that overrides ``__call__`` is called through it (in a worker thread),
        as DSPy calls every LM; otherwise through ``aforward``."""
        if type(self).__call__ is not BaseLM.__call__:
            return await complete_through_call(self, messages, kwargs)
        params = self._params(kwargs)
        start = time.perf_counter()
        raw = await self.aforward(messages=list(messages), **params)
        response = response_from_completion(raw, self.model)
        self._finish(messages, params, response, time.perf_counter() - start)
        return response

    def complete(self, messages: Sequence[Message], **kwargs: Any) -> LMResponse:
        from dspex.utils.aio import run_sync

        return run_sync(self.acomplete(messages, **kwargs))

    @redacted_sync_lm_call
    def __call__(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        """The output texts for a prompt or a message list (DSPy's call): runs ``forward``
        in this thread and records the call."""
        messages = as_messages(prompt, messages)
        params = self._params(kwargs)
        start = time.perf_counter()
        raw = self.forward(messages=list(messages), **params)
        response = response_from_completion(raw, self.model)
        self._finish(messages, params, response, time.perf_counter() - start)
        return response.outputs

    async def acall(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        return (await self.acomplete(as_messages(prompt, messages), **kwargs)).outputs

    def copy(self, **kwargs: Any) -> BaseLM:
        """A copy with some request options changed (``None`` removes one); fresh history."""
        new = copy_module.deepcopy(self)
        new.history = []
        for name, value in kwargs.items():
            if hasattr(new, name) and name != "kwargs":
                setattr(new, name, value)
            elif value is None:
                new.kwargs.pop(name, None)
            else:
                new.kwargs[name] = value
        return new

    def dump_state(self) -> dict[str, Any]:
        """Model and request options, for saving a program (never an API key); names
        this LM's class under `LM_CLASS_STATE_KEY`."""
        from dspex.observability.redact import is_secret_name

        options = {
            k: v for k, v in self.kwargs.items() if k != LM_CLASS_STATE_KEY and not is_secret_name(k)
        }
        return {
            LM_CLASS_STATE_KEY: f"{type(self).__module__}.{type(self).__qualname__}",
            "model": self.model,
            "model_type": self.model_type,
            "cache": self.cache,
            **options,
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> BaseLM:
        """An LM of this class rebuilt from `dump_state` output."""
        options = {k: v for k, v in state.items() if k != LM_CLASS_STATE_KEY}
        return cls(**options)

    def inspect_history(self, n: int = 1) -> str:
        from dspex.clients.history import inspect_history

        return inspect_history(n, history=self.history)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    # --- internals ---------------------------------------------------------------------------

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """This LM's options, overridden per call, without the ones that steer dspex."""
        return {**self.kwargs, **{k: v for k, v in kwargs.items() if k not in _DSPEX_OPTIONS}}

    def _finish(
        self, messages: Sequence[Message], params: dict[str, Any], response: LMResponse, latency: float
    ) -> None:
        record_usage(self.model, response.usage, cached=response.cached)
        entry = make_entry(
            model=self.model, messages=messages, params=params, response=response, latency=latency
        )
        record(entry, self.history)


async def complete_through_call(
    lm: Any, messages: Sequence[Message], kwargs: dict[str, Any]
) -> LMResponse:
    """One request answered by the LM's own ``__call__`` (a subclass that overrides it),
    run in a worker thread with this context's settings, as DSPy calls every LM."""
    options = {k: v for k, v in kwargs.items() if k not in _DSPEX_OPTIONS}
    outputs = await asyncio.to_thread(
        contextvars.copy_context().run, lambda: lm(messages=list(messages), **options)
    )
    return LMResponse([_output(o) for o in outputs], Usage(calls=1), str(lm.model))


def response_from_completion(completion: Any, model: str) -> LMResponse:
    """An `LMResponse` from an OpenAI-style chat completion, as object or as dict."""
    choices = _field(completion, "choices")
    if not choices:
        raise ConfigurationError(
            f"the LM {model!r} returned no choices: forward() must return a chat completion "
            "with choices[i].message.content"
        )
    outputs: list[Output] = []
    reasons: list[str | None] = []
    for choice in choices:
        message = _field(choice, "message")
        content = _field(message, "content") if message is not None else _field(choice, "text")
        calls = _field(message, "tool_calls") if message is not None else None
        if calls:
            text = None if content is None else str(content)
            outputs.append(completion_output(text, [_tool_call_dict(c) for c in calls]))
        else:
            outputs.append("" if content is None else str(content))
        reasons.append(_field(choice, "finish_reason"))
    usage = _field(completion, "usage")
    prompt_tokens = int(_field(usage, "prompt_tokens") or 0) if usage is not None else 0
    completion_tokens = int(_field(usage, "completion_tokens") or 0) if usage is not None else 0
    return LMResponse(
        outputs,
        Usage(prompt_tokens, completion_tokens, calls=1),
        str(_field(completion, "model") or model),
        finish_reasons=reasons,
    )


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _tool_call_dict(call: Any) -> dict[str, Any]:
    """A tool call of a completion object (an SDK object or a dict) in the OpenAI dict shape."""
    function = _field(call, "function")
    arguments = _field(function, "arguments") if function is not None else _field(call, "arguments")
    if arguments is not None and not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, default=str)
    return {
        "id": _field(call, "id"),
        "type": "function",
        "function": {
            "name": _field(function, "name") if function is not None else _field(call, "name"),
            "arguments": arguments or "{}",
        },
    }


def _output(output: Any) -> Output:
    """One output of a user's ``__call__``: a string, or a dict (kept as a text-and-tool-calls
    dict when it carries tool calls, else its text)."""
    if isinstance(output, Mapping):
        calls = output.get("tool_calls")
        text = output.get("text", output.get("content"))
        if calls:
            return completion_output(None if text is None else str(text), [_tool_call_dict(c) for c in calls])
        return str(text or "")
    return str(output)


def as_messages(prompt: str | None, messages: Sequence[Message] | None) -> Sequence[Message]:
    """The messages of a DSPy-style LM call: ``messages=`` as given, else the prompt as one
    user message."""
    if messages is not None:
        return messages
    if prompt is None:
        raise ConfigurationError("LM call needs a prompt or messages=[...]")
    return [{"role": "user", "content": prompt}]


__all__ = [
    "GLOBAL_HISTORY",
    "LM_CLASS_STATE_KEY",
    "MAX_HISTORY",
    "BaseLM",
    "as_messages",
    "complete_through_call",
    "response_from_completion",
]
