"""Typed values in prompts: render a value into a section, parse a section back.

Parsing is tolerant of how models write values (``"42."``, ``'yes'`` in quotes,
JSON inside a code fence) and strict about what the field's type allows: the
result is validated by pydantic against the field's type and constraints.
"""

from __future__ import annotations

import ast
import enum
import functools
import json
import re
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

from dspex.adapters.types.base import PartsCollector, Type, is_custom_type, render_parts
from dspex.errors import ValueParseError
from dspex.signatures.field import FieldSpec
from dspex.signatures.types import is_pydantic_model, literal_options, type_name

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}


def format_value(value: Any) -> str:
    """Render a value as the text of a prompt section."""
    if isinstance(value, str):
        return value
    if isinstance(value, Type):
        return render_parts(value.format())
    if isinstance(value, enum.Enum):
        return str(_enum_text(value))
    if isinstance(value, BaseModel):
        # Images (any value with non-text parts) inside the model are sent as parts.
        collector = PartsCollector()
        return collector.restore(value.model_dump_json(context=collector.context))
    if isinstance(value, list | tuple | dict):
        collector = PartsCollector()
        try:
            return collector.restore(json.dumps(_jsonable(value, collector), ensure_ascii=False))
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _enum_text(member: enum.Enum) -> Any:
    # String-valued enums are written by value; others (auto() numbers) by name,
    # which is what a reader (and the LM) can tell apart.
    return member.value if isinstance(member.value, str) else member.name


def _jsonable(value: Any, collector: PartsCollector | None = None) -> Any:
    """``value`` as JSON-ready data for a prompt. With a ``collector``, values with
    non-text parts (images) become tokens that ``collector.restore`` turns into parts."""
    if isinstance(value, enum.Enum):
        return _enum_text(value)
    if isinstance(value, Type) and value.text_value:
        return render_parts(value.format())
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", context=collector.context if collector else None)
    if isinstance(value, list | tuple):
        return [_jsonable(v, collector) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, collector) for k, v in value.items()}
    return value


def type_hint(spec: FieldSpec) -> str:
    """How a reply should write this field's value, in words."""
    annotation = _strip_optional(spec.annotation)
    options = literal_options(annotation)
    if options is not None:
        return "one of: " + ", ".join(repr(o) if isinstance(o, str) else str(o) for o in options)
    if annotation is str:
        return ""
    if is_custom_type(annotation) and (annotation.text_value or annotation.parts_value):
        return annotation.description()
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of: " + ", ".join(repr(_enum_text(m)) for m in annotation)
    if annotation is bool:
        return "True or False"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if is_pydantic_model(annotation):
        schema = json.dumps(annotation.model_json_schema(), separators=(",", ":"))
        return f"a JSON object following the schema {schema}"
    return f"JSON of type {type_name(annotation)}"


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def parse_value(text: str, spec: FieldSpec) -> Any:
    """Parse a section's text into a value of the field's type, or raise ValueParseError."""
    annotation = spec.annotation
    if annotation is str and not spec.info.metadata:
        return text.strip()
    raw = _unfence(text.strip())
    candidate = _candidate(raw, annotation)
    try:
        return _validator(annotation, tuple(spec.info.metadata)).validate_python(candidate)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors()[:3])
        raise ValueParseError(
            f"{raw[:200]!r} is not a valid {type_name(annotation)}: {problems}"
        ) from None


def coerce_value(value: Any, spec: FieldSpec) -> Any:
    """Validate an already-decoded value (from a JSON reply) against the field's type."""
    if isinstance(value, str) and spec.annotation is not str:
        return parse_value(value, spec)
    try:
        return _validator(spec.annotation, tuple(spec.info.metadata)).validate_python(value)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors()[:3])
        raise ValueParseError(f"{value!r:.200} is not a valid {type_name(spec.annotation)}: {problems}") from None


@functools.lru_cache(maxsize=1024)
def _validator(annotation: Any, metadata: tuple[Any, ...]) -> TypeAdapter[Any]:
    # Building a TypeAdapter costs about a millisecond; fields repeat, so cache them.
    target = Annotated[(annotation, *metadata)] if metadata else annotation
    return TypeAdapter(target)


def validator_for(annotation: Any) -> TypeAdapter[Any]:
    """A cached pydantic validator for ``annotation`` (no field constraints)."""
    return _validator(annotation, ())


def _unfence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def _candidate(raw: str, annotation: Any) -> Any:
    """A Python value pydantic can validate, decoded from the text as the type suggests."""
    inner = _strip_optional(annotation)
    if inner is not annotation and raw.lower() in ("none", "null", ""):
        return None
    if literal_options(inner) is not None:
        return _literal_candidate(raw, literal_options(inner) or ())
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return _enum_candidate(raw, inner)
    if inner is bool:
        lowered = raw.strip(" .'\"").lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return raw
    if inner in (int, float):
        return _number_candidate(raw)
    if inner is str or (is_custom_type(inner) and inner.text_value):
        return raw
    return _structured_candidate(raw)


def _literal_candidate(raw: str, options: tuple[Any, ...]) -> Any:
    cleaned = raw.strip().strip(".").strip("'\"`").strip()
    for option in options:
        if str(option) == cleaned:
            return option
    for option in options:
        if str(option).lower() == cleaned.lower():
            return option
    # A Literal[...] prefix like "Literal['yes']" or the value followed by an explanation.
    for option in options:
        if re.match(rf"^\W*{re.escape(str(option))}\b", cleaned, re.IGNORECASE):
            return option
    return cleaned


def _enum_candidate(raw: str, enum_type: type[enum.Enum]) -> Any:
    """A member named or valued by the text (exact, then ignoring case), else the text
    (which pydantic then rejects, listing the allowed values)."""
    cleaned = raw.strip().strip(".").strip("'\"`").strip()
    if cleaned.startswith(f"{enum_type.__name__}."):
        cleaned = cleaned[len(enum_type.__name__) + 1 :]
    for match in (str.__eq__, lambda a, b: a.lower() == b.lower()):
        for member in enum_type:
            if match(str(member.value), cleaned) or match(member.name, cleaned):
                return member
    return cleaned


def _number_candidate(raw: str) -> Any:
    cleaned = raw.strip().rstrip(".").replace("_", "")
    try:
        return json.loads(cleaned.replace(",", "")) if cleaned else cleaned
    except json.JSONDecodeError:
        pass
    numbers = _NUMBER.findall(raw)
    if len(numbers) == 1:
        return json.loads(numbers[0].replace(",", ""))
    return raw


def _structured_candidate(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``, tolerating prose and code fences around it."""
    stripped = _unfence(text.strip())
    try:
        value = json.loads(stripped)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    start = stripped.find("{")
    while start != -1:
        end = _matching_brace(stripped, start)
        if end is not None:
            value = _loads_lenient(stripped[start : end + 1])
            if isinstance(value, dict):
                return value
        start = stripped.find("{", start + 1)
    return None


def _loads_lenient(text: str) -> Any:
    """JSON, else a Python literal (models often write ``{'answer': 'x'}`` with single
    quotes, or ``True``/``None``): ``ast.literal_eval`` evaluates literals only, no code."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _matching_brace(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def json_schema_type(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a field's type, for structured-output requests."""
    return TypeAdapter(annotation).json_schema()


__all__ = [
    "ValueParseError",
    "coerce_value",
    "extract_json_object",
    "format_value",
    "json_schema_type",
    "parse_value",
    "type_hint",
]
