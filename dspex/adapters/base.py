"""The adapter pipeline: signature + demos + inputs -> messages -> LM -> typed outputs.

An adapter owns one prompt format. `format` builds the chat messages, `parse`
reads one reply back into output values, and `acall` runs the round trip
against any LM that has ``acomplete(messages, **kwargs) -> LMResponse``,
telling call observers (callbacks) about each format and parse.
Formatting work that depends only on the signature is cached per signature.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic_core import PydanticUndefined

from dspex.adapters.native_tools import (
    NativeToolPlan,
    native_history_turns,
    plan_native_tools,
    read_native_output,
    tool_call_results_of,
    tool_calls_in,
    tool_calls_output_field,
    tools_input_field,
    without_results,
)
from dspex.adapters.types.base import (
    holds_parts_type,
    is_custom_type,
    parts_session,
    with_content_parts,
    with_typed_media,
)
from dspex.adapters.types.history import History, history_field
from dspex.adapters.values import ValueParseError, format_value, type_hint
from dspex.clients.streaming import current_sink, deliver_unstreamed
from dspex.clients.types import Message, Output, Usage, output_text
from dspex.errors import AdapterParseError
from dspex.observability.hooks import observe_call
from dspex.signatures.field import FieldSpec
from dspex.signatures.signature import SignatureMeta
from dspex.signatures.types import type_name
from dspex.utils.aio import run_sync

Demo = Mapping[str, Any]


def section(name: str) -> str:
    return f"[[ ## {name} ## ]]"


END_MARKER = section("completed")


@dataclass(frozen=True, slots=True)
class AdapterResult:
    """The parsed completions of one adapter call and the LM usage it took."""

    completions: list[dict[str, Any]]
    usage: Usage
    adapter: str
    #: raw replies that could not be parsed (when others could)
    rejected: list[AdapterParseError]
    #: the model that answered, as the response names it (an LM's fallback, see
    #: `dspex.clients.fallback`); None when unknown
    model: str | None = None


class Adapter:
    """Base class: subclasses define the structure paragraph, reply hint and parser."""

    name: ClassVar[str] = "adapter"

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        # use_native_function_calling / parallel_tool_calls: see dspex.adapters.native_tools.
        self.callbacks = list(callbacks or [])
        self.use_native_function_calling = use_native_function_calling
        self.native_response_types = list(native_response_types or [])
        self.parallel_tool_calls = parallel_tool_calls
        self._system_cache: dict[SignatureMeta, str] = {}
        self._hint_cache: dict[SignatureMeta, str] = {}

    # --- formatting ------------------------------------------------------------

    def format(
        self, signature: SignatureMeta, demos: Sequence[Demo], inputs: Mapping[str, Any]
    ) -> list[Message]:
        with parts_session():  # images are kept aside, not written out as JSON and read back
            return self._format(signature, demos, inputs)

    def _format(
        self, signature: SignatureMeta, demos: Sequence[Demo], inputs: Mapping[str, Any]
    ) -> list[Message]:
        if _has_media_fields(signature):
            # A data URI or URL given (or saved) for an image field becomes an Image,
            # so it is sent as an image, never as text.
            inputs = with_typed_media(signature.fields, inputs)
            demos = [with_typed_media(signature.fields, demo) for demo in demos]
        history_name = history_field(signature)
        history_turns: list[Message] = []
        if history_name is not None:
            # The history is not a field the LM fills in or reads as a section: it
            # becomes earlier turns of the chat, after the demos.
            inputs = dict(inputs)
            history_turns = self.format_conversation_history(signature, history_name, inputs)
            inputs.pop(history_name, None)
            signature = signature.delete(history_name)
        messages: list[Message] = [{"role": "system", "content": self.system_message(signature)}]
        for demo in demos:
            pair = self.format_demo(signature, demo)
            if pair is not None:
                messages.extend(pair)
        messages.extend(history_turns)
        messages.append({"role": "user", "content": self.user_message(signature, inputs)})
        return [with_content_parts(message) for message in messages]

    def format_finetune_data(
        self,
        signature: SignatureMeta,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> dict[str, list[Message]]:
        """One chat-format training example: the messages a call with ``inputs`` sends,
        then the assistant's message holding ``outputs`` (DSPy's name)."""
        messages = self.format(signature, demos, inputs)
        messages.append({"role": "assistant", "content": self.assistant_message(signature, outputs)})
        return {"messages": messages}

    def format_conversation_history(
        self, signature: SignatureMeta, history_field_name: str, inputs: dict[str, Any]
    ) -> list[Message]:
        """The `History` in ``inputs[history_field_name]`` as chat turns: per message, a
        user turn with its input fields, then an assistant turn with its output fields
        (when it has any). A message holding `ToolCalls` with results is followed by
        those results: a ``tool_call_results`` user turn, or, with native function
        calling, the assistant turn carries the calls and one ``role: "tool"`` message
        per result follows. Takes the history out of ``inputs``. Override to render a
        conversation another way."""
        history = inputs.pop(history_field_name, None)
        signature = signature.delete(history_field_name)
        turns: list[Message] = []
        entries = history.messages if isinstance(history, History) else history
        media = _has_media_fields(signature)
        for entry in entries or ():
            if media:
                entry = with_typed_media(signature.fields, entry)
            user = self.input_sections(signature, entry)
            if user:
                turns.append({"role": "user", "content": user})
            calls = tool_calls_in(entry)
            if calls is not None and self.use_native_function_calling:
                # The provider's own turns: an assistant message with tool_calls, then
                # one tool message per result.
                turns.extend(native_history_turns(self, signature, entry, calls))
                continue
            results = tool_call_results_of(calls)
            outputs = {n: entry[n] for n in signature.output_fields if n in entry}
            if outputs:
                if results is not None:  # the results get a turn of their own, below
                    outputs = {n: without_results(v) for n, v in outputs.items()}
                content = self.assistant_message(signature, outputs)
                turns.append({"role": "assistant", "content": content})
            if results is not None:
                # Written as text, what the calls returned is the next user turn.
                shown = results.model_dump(mode="json")  # a dict: written as spaced JSON
                content = self.format_field_with_value({"tool_call_results": shown}, role="user")
                turns.append({"role": "user", "content": content})
        return turns

    def format_system_message(self, signature: SignatureMeta) -> str:
        """The system message for ``signature`` (DSPy's name for `system_message`)."""
        return self.system_message(signature)

    def format_field_with_value(self, fields_with_values: Mapping[Any, Any], role: str = "user") -> str:
        """Sections ``[[ ## name ## ]]`` + value for each (field, value) pair. A key may be
        a field name or anything with a ``.name`` (DSPy's ``FieldInfoWithName``)."""
        return "\n\n".join(
            f"{section(getattr(key, 'name', key))}\n{format_value(value)}".strip()
            for key, value in fields_with_values.items()
        )

    def system_message(self, signature: SignatureMeta) -> str:
        cached = self._system_cache.get(signature)
        if cached is None:
            cached = self._build_system_message(signature)
            _remember(self._system_cache, signature, cached)
        return cached

    def _build_system_message(self, signature: SignatureMeta) -> str:
        lines = ["You fill in output fields from input fields.", "", "Input fields:"]
        lines += [_describe(f) for f in signature.input_fields.values()] or ["(none)"]
        lines += ["", "Output fields:"]
        lines += [_describe(f) for f in signature.output_fields.values()]
        lines += ["", f"Message structure: {self.structure(signature)}", "", "Instructions:"]
        lines.append(signature.instructions)
        return "\n".join(lines)

    def user_message(self, signature: SignatureMeta, inputs: Mapping[str, Any]) -> str:
        body = self.input_sections(signature, inputs)
        return f"{body}\n\n{self.reply_hint(signature)}" if body else self.reply_hint(signature)

    def input_sections(self, signature: SignatureMeta, inputs: Mapping[str, Any]) -> str:
        parts = [
            f"{section(name)}\n{format_value(inputs[name])}"
            for name in signature.input_fields
            if name in inputs and inputs[name] is not None
        ]
        return "\n\n".join(parts)

    def reply_hint(self, signature: SignatureMeta) -> str:
        if not signature.output_fields:
            # Native tool calling took the only output: the answer is the tool calls.
            return "Respond by calling the tools you need."
        cached = self._hint_cache.get(signature)
        if cached is None:
            cached = self._build_reply_hint(signature)
            _remember(self._hint_cache, signature, cached)
        return cached

    def format_demo(self, signature: SignatureMeta, demo: Demo) -> list[Message] | None:
        """A demo as a user/assistant pair, or None if it lacks inputs or outputs."""
        keys = set(_keys(demo))
        has_inputs = any(name in keys for name in signature.input_fields)
        outputs = {n: demo[n] for n in signature.output_fields if n in keys and demo[n] is not None}
        if not has_inputs or not outputs:
            return None
        return [
            {"role": "user", "content": self.input_sections(signature, demo)},
            {"role": "assistant", "content": self.assistant_message(signature, outputs)},
        ]

    # --- subclass hooks ----------------------------------------------------------

    def structure(self, signature: SignatureMeta) -> str:
        raise NotImplementedError

    def _build_reply_hint(self, signature: SignatureMeta) -> str:
        raise NotImplementedError

    def assistant_message(self, signature: SignatureMeta, outputs: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def parse(self, signature: SignatureMeta, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def lm_kwargs(self, signature: SignatureMeta, lm: Any) -> dict[str, Any]:
        """Request parameters this format needs (e.g. ``response_format``)."""
        return {}

    # --- the round trip ------------------------------------------------------------

    async def arun(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: SignatureMeta,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> AdapterResult:
        """One round trip: the parsed completions, the LM usage and any rejected replies
        (what `Predict` uses; `acall` returns only the completions, as DSPy's does)."""
        kwargs = dict(lm_kwargs)
        # Native tool calling takes the tools and ToolCalls fields out of the prompt.
        prompt_signature, plan = plan_native_tools(self, lm, kwargs, signature, inputs)
        with observe_call(
            "adapter_format", self, {"signature": prompt_signature, "demos": demos, "inputs": inputs}
        ) as call:
            messages = self.format(prompt_signature, demos, inputs)
            call.finish(messages)
        kwargs = {**self.lm_kwargs(prompt_signature, lm), **kwargs}
        return await self._complete(lm, messages, kwargs, prompt_signature, plan)

    async def _complete(
        self,
        lm: Any,
        messages: list[Message],
        kwargs: dict[str, Any],
        signature: SignatureMeta,
        plan: NativeToolPlan | None = None,
    ) -> AdapterResult:
        sink = current_sink()
        if sink is not None:
            sink.begin(self)
        response = await lm.acomplete(messages, **kwargs)
        if sink is not None:
            await deliver_unstreamed(response)  # a cache hit or an unstreamed LM: one chunk
        completions: list[dict[str, Any]] = []
        rejected: list[AdapterParseError] = []
        for output in response.outputs:
            try:
                completions.append(self._read_output(signature, output, plan))
            except AdapterParseError as exc:
                rejected.append(exc)
        if not completions:
            error = rejected[0] if rejected else AdapterParseError(
                "the LM returned no completions", raw_text="", signature=signature
            )
            error.usage = response.usage
            raise error
        return AdapterResult(completions, response.usage, self.name, rejected, response.model)

    def _read_output(
        self, signature: SignatureMeta, output: Output, plan: NativeToolPlan | None
    ) -> dict[str, Any]:
        """One completion's output values: parsed from its text, plus its native tool
        calls when the call sent tools natively."""
        if plan is not None:
            return read_native_output(self, signature, output, plan, self._observed_parse)
        text = output_text(output)
        if text is None:
            raise parse_failure(
                "the LM answered with tool calls only, but this call did not send tools natively "
                "(use_native_function_calling=True and a ToolCalls output field read them)",
                text=str(output),
                signature=signature,
                field=None,
                parsed={},
                adapter=self,
            )
        return self._observed_parse(signature, text)

    # DSPy's names for the two native steps around the LM call.
    def _call_preprocess(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: SignatureMeta, inputs: Mapping[str, Any]
    ) -> SignatureMeta:
        """The signature the prompt is written from; adds native tools to ``lm_kwargs``."""
        return plan_native_tools(self, lm, lm_kwargs, signature, inputs)[0]

    def _call_postprocess(
        self,
        processed_signature: SignatureMeta,
        original_signature: SignatureMeta,
        outputs: Sequence[Output],
        lm: Any = None,
        lm_kwargs: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Output values of each completion (native tool calls in the ToolCalls field)."""
        plan = None
        calls_field = tool_calls_output_field(original_signature)
        tools_field = tools_input_field(original_signature)
        if self.use_native_function_calling and calls_field and tools_field:
            plan = NativeToolPlan(original_signature, tools_field, calls_field)
        return [self._read_output(processed_signature, output, plan) for output in outputs]

    def _observed_parse(self, signature: SignatureMeta, text: str) -> dict[str, Any]:
        with observe_call(
            "adapter_parse", self, {"signature": signature, "completion": text}
        ) as call:
            parsed = self.parse(signature, text)
            call.finish(parsed)
        return parsed

    async def acall(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: SignatureMeta,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """The parsed output values, one dict per completion."""
        return (await self.arun(lm, lm_kwargs, signature, demos, inputs)).completions

    def __call__(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: SignatureMeta,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        return run_sync(self.arun(lm, lm_kwargs, signature, demos, inputs)).completions

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __getstate__(self) -> dict[str, Any]:
        # Caches are rebuilt on demand; don't ship them.
        state = dict(self.__dict__)
        state["_system_cache"] = {}
        state["_hint_cache"] = {}
        return state


_CACHE_LIMIT = 512


def _remember(cache: dict[SignatureMeta, str], signature: SignatureMeta, text: str) -> None:
    # Optimizers mint many signatures (one per instruction candidate); stay bounded.
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[signature] = text


@functools.lru_cache(maxsize=1024)
def _has_media_fields(signature: SignatureMeta) -> bool:
    return any(holds_parts_type(spec.annotation) for spec in signature.fields.values())


def _describe(spec: FieldSpec) -> str:
    text = f"- `{spec.name}` ({type_name(spec.annotation)})"
    notes = [spec.desc] if spec.desc else []
    if is_custom_type(spec.annotation) and spec.annotation.description():
        notes.append(spec.annotation.description())
    constraints = spec.constraint_text()
    if constraints:
        notes.append(f"Constraints: {constraints}.")
    hint = type_hint(spec)
    if hint.startswith("a JSON object following"):
        notes.append(f"Write it as {hint}.")
    return f"{text}: {' '.join(notes)}" if notes else text


def _keys(demo: Demo) -> Any:
    keys = getattr(demo, "keys", None)
    return keys() if callable(keys) else demo


def missing_output_value(spec: FieldSpec) -> Any:
    """The value of an output field the reply left out, or `_REQUIRED` when it must be
    there: its declared default, else None when its type allows None."""
    if spec.info.default is not PydanticUndefined:
        return spec.info.default
    if spec.info.default_factory is not None:
        return spec.info.default_factory()  # type: ignore[call-arg]
    if allows_none(spec.annotation):
        return None
    return REQUIRED


REQUIRED = object()


def allows_none(annotation: Any) -> bool:
    if annotation is type(None) or annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(allows_none(a) for a in typing.get_args(annotation))
    return False


def parse_output_fields(
    adapter: Adapter,
    signature: SignatureMeta,
    text: str,
    found: Mapping[str, Any],
    convert: Callable[[Any, FieldSpec], Any],
    absent: Callable[[str], str],
) -> dict[str, Any]:
    """Each output field's value from what an adapter found in the reply (``found``: name
    -> raw value), converted to its type; a field the reply left out takes its default
    (`missing_output_value`) or fails the parse with ``absent(name)`` as the reason."""
    parsed: dict[str, Any] = {}
    for name, spec in signature.output_fields.items():
        if name not in found:
            fallback = missing_output_value(spec)
            if fallback is REQUIRED:
                raise parse_failure(
                    absent(name), text=text, signature=signature, field=name, parsed=parsed, adapter=adapter
                )
            parsed[name] = fallback
            continue
        try:
            parsed[name] = convert(found[name], spec)
        except ValueParseError as exc:
            raise parse_failure(
                f"field {name!r}: {exc}", text=text, signature=signature, field=name, parsed=parsed, adapter=adapter
            ) from None
    return parsed


def parse_failure(
    message: str,
    *,
    text: str,
    signature: SignatureMeta,
    field: str | None,
    parsed: dict[str, Any],
    adapter: Adapter | None = None,
) -> AdapterParseError:
    name = type(adapter).__name__ if adapter is not None else None
    lead = f"Adapter {name} failed to parse the LM reply: " if name else ""
    return AdapterParseError(
        f"{lead}{message}. Check the model's reply with dspex.inspect_history(); a stronger "
        "model, simpler output types or the JSONAdapter may help.",
        raw_text=text,
        signature=signature,
        field=field,
        parsed=parsed,
        adapter_name=name,
    )
