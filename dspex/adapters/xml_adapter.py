"""XMLAdapter: every field is an element ``<name>value</name>``.

Inputs, demos, history and replies all use the same tags; a reply holds one
element per output field. Parsing and the JSON fallback are the ChatAdapter's,
with tags in place of ``[[ ## name ## ]]`` headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dspex.adapters.base import parse_output_fields
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.values import format_value, parse_value
from dspex.signatures.signature import SignatureMeta

_ELEMENT = re.compile(r"<(?P<name>\w+)>(?P<body>.*?)</(?P=name)>", re.DOTALL)


def element(name: str, value: str) -> str:
    return f"<{name}>\n{value}\n</{name}>"


class XMLAdapter(ChatAdapter):
    name = "xml"

    def structure(self, signature: SignatureMeta) -> str:
        return (
            "each field is an XML element named after it, `<name>` then the value then "
            "`</name>`. A reply holds one element per output field, in the order listed above, "
            "and nothing outside them."
        )

    def _build_reply_hint(self, signature: SignatureMeta) -> str:
        return f"Reply with the elements {', then '.join(self._output_hints(signature))}, each closed by its end tag."

    def _output_marker(self, name: str) -> str:
        return f"<{name}>"

    def input_sections(self, signature: SignatureMeta, inputs: Mapping[str, Any]) -> str:
        return "\n\n".join(
            element(name, format_value(inputs[name]))
            for name in signature.input_fields
            if name in inputs and inputs[name] is not None
        )

    def assistant_message(self, signature: SignatureMeta, outputs: Mapping[str, Any]) -> str:
        return "\n\n".join(
            element(name, format_value(outputs[name])) for name in signature.output_fields if name in outputs
        )

    def format_field_with_value(self, fields_with_values: Mapping[Any, Any], role: str = "user") -> str:
        return "\n\n".join(
            element(getattr(key, "name", key), format_value(value)) for key, value in fields_with_values.items()
        )

    def parse(self, signature: SignatureMeta, text: str) -> dict[str, Any]:
        found: dict[str, str] = {}
        for match in _ELEMENT.finditer(text):
            found.setdefault(match.group("name"), match.group("body").strip())
        return parse_output_fields(
            self, signature, text, found, parse_value, lambda name: f"the reply has no `<{name}>` element"
        )
