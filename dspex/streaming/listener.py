"""`StreamListener`: follows one output field of one predictor through a streamed answer.

The LM streams the whole reply in the adapter's format; a listener yields only
its field's text, without the format around it:

- ChatAdapter: the text after ``[[ ## field ## ]]`` up to the next ``[[ ## ... ## ]]``
  header, stripped of the blank lines around it;
- XMLAdapter: the text inside ``<field>...</field>``;
- JSONAdapter: the value of the top-level key ``"field"``, a string decoded (escapes
  resolved), any other value as its JSON text.

Text that could still turn out to be the start of the next marker (a trailing
``[[ #`` or ``</fi``), and trailing whitespace, is held back until the next delta
decides it, so no marker ever leaks into a chunk. The field's last chunk has
``is_last_chunk=True`` (possibly empty, when the end marker came after the text).
An answer that arrives whole (a cache hit) gives one chunk.

A listener follows one answer of its predictor (the first in which its field
ended; a reply the adapter then re-asks for in another format, the ChatAdapter's
JSON fallback, is followed in that format); later answers of its predictor are ignored unless
``allow_reuse=True`` (e.g. a predictor called in a loop).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from dspex.errors import ConfigurationError
from dspex.streaming.messages import StreamResponse

_HEADER = re.compile(r"\[\[ ## \w+ ## \]\]")
# Every prefix of a header "[[ ## name ## ]]": an optional chain, one piece deeper each time.
_HEADER_PIECES = [r"\[", r"\[", " ", "#", "#", " ", r"\w+", " ", "#", "#", " ", r"\]", r"\]"]


def _nested(pieces: list[str]) -> str:
    if not pieces:
        return ""
    return f"{pieces[0]}(?:{_nested(pieces[1:])})?" if len(pieces) > 1 else pieces[0]


_HEADER_PREFIX = re.compile(_nested(_HEADER_PIECES))
_LOOKBACK = 80  # a header or end tag is shorter than this
_OPENINGS = re.compile(r"[\[<]")


class _MarkedField:
    """A field between a start marker and an end marker (Chat sections, XML elements)."""

    def __init__(self, start: str, end: re.Pattern[str], could_be_end: Any) -> None:
        self.start, self.end, self.could_be_end = start, end, could_be_end
        self.text = ""
        self.value_at: int | None = None
        self.emitted = 0
        self.done = False
        self.whole_at_once = False

    @property
    def started(self) -> bool:
        return self.value_at is not None

    def feed(self, delta: str) -> tuple[str, bool] | None:
        first = not self.text
        before = len(self.text)
        self.text += delta
        if self.value_at is None:
            # Only where the new text could complete the marker: no rescan of the whole reply.
            found = self.text.find(self.start, max(0, before - len(self.start)))
            if found < 0:
                return None
            self.value_at = found + len(self.start)
            before = self.value_at
        region = self.text[self.value_at :]
        match = self.end.search(region, max(0, before - self.value_at - _LOOKBACK))
        if match is not None:
            self.done = True
            self.whole_at_once = first
            return self._emit(region[: match.start()].strip(), last=True)
        held = self._held_from(region)
        return self._emit(region[:held].strip(), last=False)

    def finish(self) -> tuple[str, bool] | None:
        """The answer ended without an end marker: what is left is the field's tail."""
        if self.done or self.value_at is None:
            return None
        self.done = True
        region = self.text[self.value_at :]
        return self._emit(region[: self._held_from(region)].strip(), last=True)

    def _held_from(self, region: str) -> int:
        for opening in _OPENINGS.finditer(region, max(0, len(region) - _LOOKBACK)):
            if self.could_be_end(region[opening.start() :]):
                return opening.start()
        return len(region)

    def _emit(self, value: str, *, last: bool) -> tuple[str, bool] | None:
        piece = value[self.emitted :]
        self.emitted = max(self.emitted, len(value))
        if piece or last:
            return piece, last
        return None


def _chat_field(name: str) -> _MarkedField:
    return _MarkedField(f"[[ ## {name} ## ]]", _HEADER, lambda tail: _HEADER_PREFIX.fullmatch(tail) is not None)


def _xml_field(name: str) -> _MarkedField:
    closing = f"</{name}>"
    return _MarkedField(f"<{name}>", re.compile(re.escape(closing)), closing.startswith)


class _JSONField:
    """The value of a top-level key of a JSON object, read as its characters arrive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = ""
        self.depth = 0
        self.in_string = self.escaped = self.reading_key = False
        self.key: list[str] = []
        self.last_key: str | None = None
        self.expect = "object"
        self.capture: str | None = None  # "string" | "raw"
        self.capture_start = 0
        self.capture_end: int | None = None
        self.raw_depth = 0
        self.emitted = 0
        self.done = False
        self.whole_at_once = False

    @property
    def started(self) -> bool:
        return self.capture is not None

    def feed(self, delta: str) -> tuple[str, bool] | None:
        first = not self.text
        offset = len(self.text)
        self.text += delta
        for index, char in enumerate(delta, offset):
            if self.capture_end is not None:
                break
            self._step(index, char)
        if self.capture is None:
            return None
        if self.capture_end is not None:
            self.done = True
            self.whole_at_once = first
            return self._emit(self._value(self.text[self.capture_start : self.capture_end], final=True), last=True)
        return self._emit(self._value(self.text[self.capture_start :], final=False), last=False)

    def finish(self) -> tuple[str, bool] | None:
        if self.done or self.capture is None:
            return None
        self.done = True
        return self._emit(self._value(self.text[self.capture_start :], final=True), last=True)

    def _value(self, raw: str, *, final: bool) -> str:
        if self.capture == "raw":
            return raw.strip() if final else raw.rstrip()
        if not final:  # an escape cut in half waits for its other half
            cut = raw.rfind("\\")
            if cut >= 0 and (len(raw) - cut <= 1 or (raw[cut + 1] == "u" and len(raw) - cut < 6)):
                backslashes = len(raw[:cut]) - len(raw[:cut].rstrip("\\"))
                if backslashes % 2 == 0:
                    raw = raw[:cut]
        try:
            return str(json.loads(f'"{raw}"'))
        except ValueError:
            return raw

    def _emit(self, value: str, *, last: bool) -> tuple[str, bool] | None:
        piece = value[self.emitted :]
        self.emitted = max(self.emitted, len(value))
        if piece or last:
            return piece, last
        return None

    def _step(self, index: int, char: str) -> None:
        if self.capture == "string":
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.capture_end = index
            return
        if self.capture == "raw":
            self._step_raw(index, char)
            return
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                if self.reading_key:
                    self.reading_key = False
                    self.last_key = "".join(self.key)
                    self.expect = "colon"
            elif self.reading_key:
                self.key.append(char)
            return
        if self.expect == "value" and self.depth == 1 and not char.isspace():
            self.expect = "next"
            if self.last_key == self.name:
                if char == '"':
                    self.capture, self.capture_start = "string", index + 1
                else:
                    self.capture, self.capture_start = "raw", index
                    self._step_raw(index, char)
                return
        if char == '"':
            self.in_string = True
            if self.depth == 1 and self.expect == "key":
                self.reading_key, self.key = True, []
        elif char in "{[":
            self.depth += 1
            if self.depth == 1:
                self.expect = "key"
        elif char in "}]":
            self.depth -= 1
        elif char == ":" and self.depth == 1 and self.expect == "colon":
            self.expect = "value"
        elif char == "," and self.depth == 1:
            self.expect = "key"

    def _step_raw(self, index: int, char: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
            return
        if char == '"':
            self.in_string = True
        elif char in "{[":
            self.raw_depth += 1
        elif char in "}]":
            if self.raw_depth == 0:
                self.capture_end = index
            else:
                self.raw_depth -= 1
        elif char == "," and self.raw_depth == 0:
            self.capture_end = index


class StreamListener:
    """Streams the output field ``signature_field_name`` of one predictor.

    ``predict``/``predict_name``: the predictor to follow; by default `streamify` finds
    the one predictor of the program with that output field (and refuses when there
    are several). ``allow_reuse``: follow every answer of the predictor, not only the
    first.
    """

    def __init__(
        self,
        signature_field_name: str,
        predict: Any = None,
        predict_name: str | None = None,
        allow_reuse: bool = False,
    ) -> None:
        self.signature_field_name = signature_field_name
        self.predict = predict
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse
        self.stream_start = False
        self.stream_end = False
        self.cache_hit = False
        self._field: _MarkedField | _JSONField | None = None

    def fresh(self) -> StreamListener:
        """A copy for one run, with no state yet (a streamed program's calls may overlap)."""
        return StreamListener(self.signature_field_name, self.predict, self.predict_name, self.allow_reuse)

    # --- one answer ------------------------------------------------------------------

    def begin(self, adapter: Any = None) -> None:
        """A new answer of the predictor starts, written in ``adapter``'s format."""
        if self.stream_end and not self.allow_reuse:
            self._field = None  # a listener follows one answer unless reused
            return
        self.stream_start = self.stream_end = self.cache_hit = False
        self._field = _field_reader(adapter, self.signature_field_name)

    def receive(self, text: str) -> StreamResponse | None:
        """The chunk ``text`` (a delta of the answer) adds to this field, if any."""
        if self._field is None or self._field.done:
            return None
        return self._respond(self._field.feed(text))

    def finalize(self) -> StreamResponse | None:
        """The answer ended: the field's held-back tail, as its last chunk."""
        if self._field is None:
            return None
        return self._respond(self._field.finish())

    def _respond(self, piece: tuple[str, bool] | None) -> StreamResponse | None:
        field = self._field
        if field is not None and field.started:
            self.stream_start = True
        if piece is None:
            return None
        chunk, last = piece
        if last:
            self.stream_end = True
            self.cache_hit = bool(field and field.whole_at_once)
        return StreamResponse(self.predict_name or "", self.signature_field_name, chunk, is_last_chunk=last)

    # DSPy's check, kept for code that calls it: could ``text`` be the start of the marker
    # that ends a field in ``adapter_name``'s format?
    def _could_form_end_identifier(self, text: str, adapter_name: str) -> bool:
        if adapter_name == "JSONAdapter":
            return text.rstrip().endswith(('"', '",', '"}')) or text.endswith('" ') or "}" in text
        if adapter_name == "XMLAdapter":
            return "</" in text or text.endswith("<")
        if "[[ ##" in text:
            return True
        return any(_HEADER_PREFIX.fullmatch(text[i:]) for i in range(max(0, len(text) - 6), len(text)))

    def __repr__(self) -> str:
        return f"StreamListener({self.signature_field_name!r}, predict_name={self.predict_name!r})"


def _field_reader(adapter: Any, name: str) -> _MarkedField | _JSONField:
    from dspex.adapters.chat import ChatAdapter
    from dspex.adapters.json_adapter import JSONAdapter
    from dspex.adapters.xml_adapter import XMLAdapter

    if isinstance(adapter, XMLAdapter):
        return _xml_field(name)
    if isinstance(adapter, JSONAdapter):
        return _JSONField(name)
    if adapter is None or isinstance(adapter, ChatAdapter):
        return _chat_field(name)
    raise ConfigurationError(
        f"streaming a field needs the ChatAdapter, JSONAdapter or XMLAdapter, not a "
        f"{type(adapter).__name__}: a listener must know where its field starts and ends"
    )


def find_predictor_for_stream_listeners(program: Any, stream_listeners: list[StreamListener]) -> dict[int, list[StreamListener]]:
    """Each listener's predictor (by ``id``), found by its field when not given; fills in
    ``predict`` and ``predict_name``. Raises when a field is in no predictor or in several."""
    named = list(program.named_predictors()) if hasattr(program, "named_predictors") else []
    by_field: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for name, predictor in named:
        for field in getattr(predictor.signature, "output_fields", {}):
            by_field[field].append((name, predictor))
    routes: dict[int, list[StreamListener]] = defaultdict(list)
    for listener in stream_listeners:
        if listener.predict is None and listener.predict_name is not None:
            found = [p for n, p in named if n == listener.predict_name]
            if not found:
                raise ConfigurationError(
                    f"the program has no predictor named {listener.predict_name!r} (it has "
                    f"{', '.join(n for n, _ in named) or 'none'})"
                )
            listener.predict = found[0]
        if listener.predict is None:
            owners = by_field.get(listener.signature_field_name, [])
            if not owners:
                raise ConfigurationError(
                    f"no predictor of the program has an output field {listener.signature_field_name!r}: "
                    "check the field name, or give the listener predict=..."
                )
            if len(owners) > 1:
                raise ConfigurationError(
                    f"several predictors have an output field {listener.signature_field_name!r} "
                    f"({', '.join(name for name, _ in owners)}): give the listener predict=... to choose one"
                )
            listener.predict_name, listener.predict = owners[0]
        elif listener.predict_name is None:
            listener.predict_name = next((n for n, p in named if p is listener.predict), type(listener.predict).__name__)
        routes[id(listener.predict)].append(listener)
    return dict(routes)


__all__ = ["StreamListener", "find_predictor_for_stream_listeners"]
