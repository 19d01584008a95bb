"""ChatAdapter: every field is a ``[[ ## name ## ]]`` section; replies end with
``[[ ## completed ## ]]``. The same marker convention as DSPy, so prompts port.

If no completion of a reply can be parsed, the call is retried once through the
JSONAdapter (a second LM call) before an `AdapterParseError` is raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.adapters.base import (
    END_MARKER,
    Adapter,
    AdapterResult,
    Demo,
    parse_output_fields,
    section,
)
from dspex.adapters.values import format_value, parse_value, type_hint
from dspex.errors import AdapterParseError
from dspex.signatures.signature import SignatureMeta

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


class ChatAdapter(Adapter):
    name = "chat"

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        use_json_adapter_fallback: bool = True,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(callbacks, use_native_function_calling, native_response_types, parallel_tool_calls)
        self.use_json_adapter_fallback = use_json_adapter_fallback

    def structure(self, signature: SignatureMeta) -> str:
        return (
            "each field is a section that starts with a header line `[[ ## name ## ]]` "
            "followed by the field's value. A reply holds the output sections in the "
            f"order listed above and ends with the line `{END_MARKER}`."
        )

    def _build_reply_hint(self, signature: SignatureMeta) -> str:
        return f"Reply with the sections {', then '.join(self._output_hints(signature))}, then `{END_MARKER}`."

    def _output_marker(self, name: str) -> str:
        """How an output field's start is written in this adapter's replies."""
        return section(name)

    def _output_hints(self, signature: SignatureMeta) -> list[str]:
        """Each output field's marker with what its value must be, for the reply hint."""
        parts = []
        for spec in signature.output_fields.values():
            hint = type_hint(spec)
            if hint.startswith("a JSON object following"):
                hint = "a JSON object following the schema given above"
            parts.append(f"`{self._output_marker(spec.name)}`" + (f" ({hint})" if hint else ""))
        return parts

    def assistant_message(self, signature: SignatureMeta, outputs: Mapping[str, Any]) -> str:
        body = "\n\n".join(
            f"{section(name)}\n{format_value(outputs[name])}"
            for name in signature.output_fields
            if name in outputs
        )
        return f"{body}\n\n{END_MARKER}"

    def parse(self, signature: SignatureMeta, text: str) -> dict[str, Any]:
        return parse_output_fields(
            self, signature, text, split_sections(text), parse_value, lambda name: f"the reply has no `{section(name)}` section"
        )

    async def arun(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: SignatureMeta,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> AdapterResult:
        try:
            return await super().arun(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as exc:
            if not self.use_json_adapter_fallback:
                raise
            chat_error = exc
        first_usage = chat_error.usage
        from dspex.adapters.json_adapter import JSONAdapter

        try:
            fallback = JSONAdapter(
                use_native_function_calling=self.use_native_function_calling,
                parallel_tool_calls=self.parallel_tool_calls,
            )
            result = await fallback.arun(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as json_error:
            json_error.args = (
                f"{json_error.args[0]} (the reply could not be parsed as Chat sections "
                f"either: {chat_error.args[0]})",
            )
            raise json_error from None
        usage = result.usage if first_usage is None else first_usage + result.usage
        return AdapterResult(result.completions, usage, "chat+json", result.rejected, result.model)


def split_sections(text: str) -> dict[str, str]:
    """Map each ``[[ ## name ## ]]`` header in ``text`` to the text after it."""
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        name = match.group(1)
        if name != "completed" and name not in sections:
            sections[name] = text[match.end() : end].strip()
    return sections
