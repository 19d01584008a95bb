"""`Type`: the base of field types that render themselves into a prompt.

A subclass is a pydantic model that says how one of its values appears in a
message (`format`, a string or a list of chat content parts) and what the LM
should know about the type (`description`, added to the field's line in the
system message in place of a JSON schema when `text_value` or `parts_value`
is set).

Writing your own type (see also the README's "Images, audio and files")::

    class Chart(dspex.Type):  # a chart: sent to the LM as an image, with its title as text
        title: str
        png: dspex.Image
        parts_value: ClassVar[bool] = True  # an input the LM looks at, not JSON to write

        def format(self) -> list[dict[str, Any]]:
            # Content parts (OpenAI's shape); text parts stay text, the others become
            # parts of the message, in place, wherever the value appears in it.
            return [{"type": "text", "text": f"Chart: {self.title}"}, *self.png.format()]

        @classmethod
        def description(cls) -> str:
            return "a chart, shown as an image"

Three things a type decides:

* how it formats: `format` returns a string (written into the prompt as it is),
  a dict (written as JSON), or a list of content parts. A value whose parts are
  not all text is split out of the message text into parts of its own (see
  `render_parts` and `with_content_parts`), also inside a list, a dict or a
  pydantic model (``list[dspex.Image]`` sends one image part per image).
* how it parses from the LM's reply: a value the LM writes is validated by
  pydantic from the reply's JSON; a `text_value` type is read from plain text by
  `from_text` (override it, or add a ``mode="before"`` validator that accepts a
  string, as `dspex.Code` does).
* how it is saved: `model_dump` gives pydantic's dump of the fields unless
  `json_value` says otherwise (`dspex.Image` saves as its URL or data URI); the
  type's validator must accept that form back, so saved demos load equal.
  Override `json_value` rather than adding a ``model_serializer``: the base
  class's serializer is what lets a value's parts be found inside a list or model.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import re
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

import pydantic

from dspex.errors import MediaTypeError
from dspex.observability.blobs import describe_part

ContentPart = dict[str, Any]


class Type(pydantic.BaseModel):
    """Base class of custom field types (``dspex.Code``, ``dspex.History``-like values)."""

    #: True when the LM writes a value of this type as plain text (code, prose)
    #: rather than as a JSON object, so replies are read as text.
    text_value: ClassVar[bool] = False
    #: True when a value is content the LM looks at (an image, audio, a file) rather
    #: than JSON it could write: the field's line then carries `description`, not a
    #: JSON schema.
    parts_value: ClassVar[bool] = False

    def format(self) -> list[ContentPart] | dict[str, Any] | str:
        """The value as message content: a string, chat content parts, or a JSON object."""
        return self.model_dump_json()

    def json_value(self, dumped: Any) -> Any:
        """The value as `model_dump` gives it (saved programs, the run store, cache keys),
        from pydantic's dump of the fields (``dumped``). Override to save a simpler form;
        the type's validator must accept that form back."""
        return dumped

    @pydantic.model_serializer(mode="wrap")
    def _serialize(self, handler: pydantic.SerializerFunctionWrapHandler, info: pydantic.SerializationInfo) -> Any:
        collector = info.context.get(PARTS_CONTEXT) if isinstance(info.context, dict) else None
        if isinstance(collector, PartsCollector):
            # Dumped into a prompt as part of a larger value (a list, a model): non-text
            # parts are held back and put in place of a token once the JSON is written.
            parts = self.format()
            if isinstance(parts, list) and not all(_is_text_part(p) for p in parts):
                return collector.token(parts)
        return self.json_value(handler(self))

    @classmethod
    def description(cls) -> str:
        """What the LM should know about this type; empty when the schema says enough."""
        return ""

    @classmethod
    def extract_custom_type_from_annotation(cls, annotation: Any) -> list[type[Type]]:
        """The subclasses of ``cls`` an annotation names, at any depth, in the order
        written: ``list[dict[Key, Event]]`` gives ``[Key, Event]``."""
        if isinstance(annotation, type) and issubclass(annotation, cls):
            return [annotation]
        found: list[type[Type]] = []
        for arg in typing.get_args(annotation):
            if not isinstance(arg, str):
                found.extend(cls.extract_custom_type_from_annotation(arg))
        return found

    @classmethod
    def from_text(cls, text: str) -> Type:
        """A value read from the LM's text (for `text_value` types)."""
        return cls.model_validate(text)


# A value whose content parts are not all text (an image, a provider-specific part)
# travels through the string-building code between these markers; the finished
# message is then split into a list of content parts around them. Inside
# `Adapter.format` (a `parts_session`) the marker holds only the index of parts kept
# aside, so an image's megabytes are never copied into JSON and parsed back; elsewhere
# it holds the parts as JSON. JSON never contains a raw NUL, so the markers are unique.
_PARTS_OPEN = "\x00dspex-parts:"
_PARTS_CLOSE = "\x00"
_SESSION_REF = "#"
_session: ContextVar[list[list[ContentPart]] | None] = ContextVar("dspex_parts_session", default=None)


@contextlib.contextmanager
def parts_session() -> Iterator[None]:
    """Within the block, `render_parts` keeps parts aside for `with_content_parts` (in
    the same block) instead of writing them out as JSON."""
    token = _session.set([])
    try:
        yield
    finally:
        _session.reset(token)


def render_parts(parts: list[ContentPart] | dict[str, Any] | str) -> str:
    """Content parts as prompt text: text parts verbatim; other parts marked, to be
    restored as parts of the message by `with_content_parts`. A JSON object (a
    `format` that returns a dict, as DSPy's ToolCalls does) is written as JSON."""
    if isinstance(parts, str):
        return parts
    if isinstance(parts, dict):
        return json.dumps(parts, ensure_ascii=False, default=str)
    if all(_is_text_part(p) for p in parts):
        return "\n".join(p["text"] for p in parts)
    kept = _session.get()
    if kept is not None:
        kept.append(parts)
        return f"{_PARTS_OPEN}{_SESSION_REF}{len(kept) - 1}{_PARTS_CLOSE}"
    return _PARTS_OPEN + json.dumps(parts, ensure_ascii=False, default=str) + _PARTS_CLOSE


#: key of the pydantic serialization context under which a `PartsCollector` travels
PARTS_CONTEXT = "dspex_prompt_parts"
_collector_ids = itertools.count()


class PartsCollector:
    """Non-text content parts met while a larger value (a list of images, a model
    holding one) is dumped to JSON for a prompt: each is replaced by a token string,
    and `restore` puts the parts (marked as `render_parts` marks them) back where the
    tokens ended up in the JSON text."""

    def __init__(self) -> None:
        self._prefix = f"@@dspex-part-{next(_collector_ids)}-"
        self._parts: list[list[ContentPart]] = []

    @property
    def context(self) -> dict[str, Any]:
        """The serialization context to pass to ``model_dump``/``model_dump_json``."""
        return {PARTS_CONTEXT: self}

    def token(self, parts: list[ContentPart]) -> str:
        self._parts.append(parts)
        return f"{self._prefix}{len(self._parts) - 1}@@"

    def restore(self, text: str) -> str:
        if not self._parts:
            return text
        tokens = re.compile('"' + re.escape(self._prefix) + r'(\d+)@@"')
        return tokens.sub(lambda m: render_parts(self._parts[int(m.group(1))]), text)


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def with_content_parts(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its content as a list of parts when a value in it has
    non-text parts; unchanged otherwise. Only user messages carry such parts (the
    providers take images, audio and files from the user): in another role's message
    (an assistant turn of a demo with an image output) a value is written as text, a
    URL as itself and content held here as its placeholder."""
    content = message.get("content")
    if not isinstance(content, str) or _PARTS_OPEN not in content:
        return message
    parts = _split_parts(content)
    if message.get("role", "user") != "user":
        return {**message, "content": "".join(_as_text(part) for part in parts)}
    return {**message, "content": parts}


def _as_text(part: ContentPart) -> str:
    if _is_text_part(part):
        return part["text"]
    image = part.get("image_url") if isinstance(part, dict) else None
    url = image.get("url") if isinstance(image, dict) else None
    if isinstance(url, str) and not url.startswith("data:"):
        return url
    return describe_part(part) if isinstance(part, dict) else str(part)


def _split_parts(content: str) -> list[ContentPart]:
    parts: list[ContentPart] = []
    position = 0
    while (start := content.find(_PARTS_OPEN, position)) != -1:
        end = content.find(_PARTS_CLOSE, start + len(_PARTS_OPEN))
        if end == -1:
            break  # an unterminated marker: the rest is text
        if start > position:
            parts.append({"type": "text", "text": content[position:start]})
        parts.extend(_marked_parts(content[start + len(_PARTS_OPEN) : end]))
        position = end + len(_PARTS_CLOSE)
    if position < len(content):
        parts.append({"type": "text", "text": content[position:]})
    return parts


def _marked_parts(payload: str) -> list[ContentPart]:
    if payload.startswith(_SESSION_REF):
        kept = _session.get()
        index = int(payload[len(_SESSION_REF) :])
        if kept is None or index >= len(kept):
            raise RuntimeError(
                "content parts were rendered inside Adapter.format but split outside it; "
                "call with_content_parts on the messages before format returns"
            )
        return list(kept[index])
    return json.loads(payload)


def is_custom_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Type)


def holds_parts_type(annotation: Any) -> bool:
    """Whether values of ``annotation`` can hold a `Type` sent as content parts (an
    image): the type itself, inside ``list[...]``/``dict[...]``/``Optional[...]``, or a
    field of a pydantic model."""
    try:
        return _holds_parts_type(annotation, frozenset())
    except TypeError:  # an unhashable annotation object
        return False


@functools.lru_cache(maxsize=1024)
def _holds_parts_type(annotation: Any, seen: frozenset[Any]) -> bool:
    if isinstance(annotation, type):
        if issubclass(annotation, Type) and annotation.parts_value:
            return True
        if issubclass(annotation, pydantic.BaseModel) and annotation not in seen:
            inner = seen | {annotation}
            return any(_holds_parts_type(f.annotation, inner) for f in annotation.model_fields.values())
        return False
    return any(_holds_parts_type(arg, seen) for arg in typing.get_args(annotation) if not isinstance(arg, str))


def with_typed_media(fields: Mapping[str, Any], values: Mapping[str, Any], *, strict: bool = True) -> Mapping[str, Any]:
    """``values`` with each value of a field whose type holds an image (or other parts
    type) validated into that type: a data URI or URL string becomes an `Image`, a
    saved ``list`` of them a list of Images, a dict a model holding them. ``fields``
    maps names to field specs (with ``.annotation``). Returns ``values`` itself when
    nothing changes.

    A value that does not validate raises `MediaTypeError` naming the field (with
    ``strict=False`` it is left as it was, for states saved by older versions)."""
    changed: dict[str, Any] | None = None
    for name, spec in fields.items():
        if name not in values:
            continue
        value = values[name]
        annotation = spec.annotation
        if value is None or isinstance(value, Type) or not holds_parts_type(annotation):
            continue
        try:
            typed = _validator(annotation).validate_python(value)
        except pydantic.ValidationError as exc:
            if not strict:
                continue
            problem = "; ".join(str(e.get("msg")) for e in exc.errors(include_url=False)[:2])
            raise MediaTypeError(f"field {name!r}: {problem}") from None
        if typed is not value:
            changed = dict(values) if changed is None else changed
            changed[name] = typed
    return values if changed is None else changed


@functools.lru_cache(maxsize=256)
def _validator(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)
