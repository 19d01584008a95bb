"""JSONAdapter: inputs as ``[[ ## name ## ]]`` sections, the reply one JSON object.

Where the provider supports it, the request carries a JSON-schema
``response_format`` built from the output fields; otherwise ``json_object``; for
providers without the parameter (Anthropic) the prompt alone asks for JSON. A
provider that rejects the parameter is asked again with the next weaker mode.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import create_model

from dspex.adapters.base import (
    Adapter,
    AdapterResult,
    parse_failure,
    parse_output_fields,
)
from dspex.adapters.native_tools import NativeToolPlan
from dspex.adapters.types.base import is_custom_type
from dspex.adapters.types.tool import ToolCalls
from dspex.adapters.values import _jsonable, coerce_value, extract_json_object
from dspex.clients.types import Message
from dspex.errors import LMBadRequestError
from dspex.signatures.signature import SignatureMeta
from dspex.signatures.types import is_pydantic_model, literal_options

_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class JSONAdapter(Adapter):
    """Replies are one JSON object. Native function calling is on by default (as in
    DSPy): a signature with tools and a ToolCalls output sends its tools natively."""

    name = "json"

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = True,
        native_response_types: list[type] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(callbacks, use_native_function_calling, native_response_types, parallel_tool_calls)

    def structure(self, signature: SignatureMeta) -> str:
        return (
            "inputs are sections that start with a header line `[[ ## name ## ]]` followed "
            "by the field's value. A reply is one JSON object whose keys are the output "
            "field names listed above."
        )

    def _build_reply_hint(self, signature: SignatureMeta) -> str:
        keys = ", ".join(
            f"`{name}` ({_json_kind(spec.annotation)})" for name, spec in signature.output_fields.items()
        )
        return f"Reply with a JSON object with the keys {keys}, and nothing else."

    def assistant_message(self, signature: SignatureMeta, outputs: Mapping[str, Any]) -> str:
        return json.dumps(
            {name: _jsonable(outputs[name]) for name in signature.output_fields if name in outputs},
            ensure_ascii=False,
            indent=2,
        )

    def format_field_with_value(self, fields_with_values: Mapping[Any, Any], role: str = "user") -> str:
        """User turns carry sections; an assistant turn is one JSON object of the values."""
        if role == "user":
            return super().format_field_with_value(fields_with_values, role)
        return json.dumps(
            {getattr(k, "name", k): _jsonable(v) for k, v in fields_with_values.items()},
            ensure_ascii=False,
            indent=2,
        )

    def parse(self, signature: SignatureMeta, text: str) -> dict[str, Any]:
        obj = extract_json_object(text)
        if obj is None:
            raise parse_failure(
                "the reply holds no JSON object",
                text=text,
                signature=signature,
                field=None,
                parsed={},
                adapter=self,
            )
        return parse_output_fields(
            self, signature, text, obj, coerce_value, lambda name: f"the JSON reply has no key {name!r}"
        )

    def lm_kwargs(self, signature: SignatureMeta, lm: Any) -> dict[str, Any]:
        if not signature.output_fields:
            return {}  # only native tool calls are asked for: the reply need not be JSON
        mode = response_format_mode(signature, lm)
        if mode == "json_schema" and any(s.annotation is ToolCalls for s in signature.output_fields.values()):
            mode = "json_object"  # tool calls written as text: strict schemas describe them poorly
        if mode == "json_schema":
            return {"response_format": json_schema_format(signature)}
        if mode == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {}

    async def _complete(
        self,
        lm: Any,
        messages: list[Message],
        kwargs: dict[str, Any],
        signature: SignatureMeta,
        plan: NativeToolPlan | None = None,
    ) -> AdapterResult:
        try:
            return await super()._complete(lm, messages, kwargs, signature, plan)
        except LMBadRequestError as exc:
            weaker = _weaker_format(kwargs.get("response_format"), str(exc))
            if weaker is _UNCHANGED:
                raise
        kwargs = {k: v for k, v in kwargs.items() if k != "response_format"}
        if weaker is not None:
            kwargs["response_format"] = weaker
        return await self._complete(lm, messages, kwargs, signature, plan)


_UNCHANGED = object()


def _weaker_format(current: Any, error: str) -> Any:
    """The next response_format to try after a provider rejected ``current``."""
    lowered = error.lower()
    if not isinstance(current, dict) or ("response_format" not in lowered and "json" not in lowered):
        return _UNCHANGED
    if current.get("type") == "json_schema":
        return {"type": "json_object"}
    return None


def response_format_mode(signature: SignatureMeta, lm: Any) -> str | None:
    """Which ``response_format`` to send: ``json_schema``, ``json_object`` or None.

    An LM may say it outright (``response_format_mode``), or as DSPy's LMs do
    (``supports_response_schema``, ``supported_params``). Otherwise dspex's own
    `LM` sends a schema to OpenAI-protocol endpoints; an LM that says nothing
    (a custom `BaseLM`, a test double) gets the prompt's JSON instructions only.
    """
    explicit = getattr(lm, "response_format_mode", None)
    if explicit is not None:
        return explicit
    supports_schema = getattr(lm, "supports_response_schema", None)
    if isinstance(supports_schema, bool):
        if not supports_schema:
            params = getattr(lm, "supported_params", None) or ()
            return "json_object" if "response_format" in params else None
    elif getattr(lm, "provider", None) != "openai":
        return None
    if any(_open_dict(spec.annotation) for spec in signature.output_fields.values()):
        # Strict schemas cannot describe free-form objects.
        return "json_object"
    return "json_schema"


@functools.lru_cache(maxsize=256)
def json_schema_format(signature: SignatureMeta) -> dict[str, Any]:
    model = create_model(  # type: ignore[call-overload]
        "Outputs",
        **{name: (_schema_type(spec.annotation), ...) for name, spec in signature.output_fields.items()},
    )
    name = _SCHEMA_NAME.sub("_", signature.__name__)[:64] or "outputs"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": model.model_json_schema(), "strict": False},
    }


def _schema_type(annotation: Any) -> Any:
    # Types the LM writes as text (code, reasoning) are strings in the reply's schema.
    return str if is_custom_type(annotation) and annotation.text_value else annotation


def _open_dict(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is dict or origin is dict:
        return True
    return any(_open_dict(arg) for arg in typing.get_args(annotation))


def _json_kind(annotation: Any) -> str:
    if annotation is str:
        return "string"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation is bool:
        return "boolean"
    options = literal_options(annotation)
    if options is not None:
        return "one of " + ", ".join(json.dumps(o) for o in options)
    if is_pydantic_model(annotation):
        return "object"
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        return "array"
    if origin is dict or annotation is dict:
        return "object"
    return "JSON value"
