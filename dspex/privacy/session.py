"""Redaction sessions: personal data out as placeholders, back in on the way home.

A `RedactionSession` maps each piece of personal data it has seen to a placeholder
``<KIND_n>`` (``<EMAIL_1>``, ``<PHONE_2>``) and back. The same value always gets the
same placeholder within a session, so an LM that answers with ``<EMAIL_1>`` in one
step passes it to the next step's prompt, and the real value is put back once, at
the end.

Scope: one session per outermost module call (`outermost_session`, opened by
``Module.__call__``/``acall``). The call's arguments are redacted before the program
runs and the value it returns is restored after, so everything in between (the
program's steps, the prompts, the LM client's cache keys and history, traces and
the demos optimizers build from them, call observers, logs) handles placeholders
only. The LM client (`redacted_lm_call`) redacts every message it sends with the
active session too, which catches what the call's arguments do not hold: demos,
instructions, tool results. A direct LM call outside any module gets a session of
its own, and its outputs are restored before it returns.

Elsewhere in the core: a `Tool` called inside a redacted call gets the real values
(`reveal`) and its result goes back as placeholders (`redacted_in_session`); streamed
field chunks are restored as they go (`RestoringStream`); logs and events go through
`redact_personal_data` (in `dspex.observability.redact`, the one rule for what is
shown); the run store's steps and programs through `redacted_for_storage`.

The redactors are read from the ``redactors`` setting at each use (the settings
layer installs `configured_redactors`), so ``dspex.context(redactors=...)`` scopes
them like any setting. A session is never pickled with its values, so nothing that
crosses to a Ray worker or into storage carries the mapping.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from dspex.privacy.redactors import spans_of


def _no_redactors() -> Sequence[Any]:
    return ()


#: The settings layer replaces this with a reader of the ``redactors`` setting.
configured_redactors: Callable[[], Sequence[Any]] = _no_redactors

_active: ContextVar[RedactionSession | None] = ContextVar("dspex_redaction_session", default=None)

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")

# Keys of a chat message whose string values are structure, not text: never redacted
# (a role, an id, a tool's name, a media URL or its base64 data).
_STRUCTURAL_KEYS = frozenset(
    {
        "role", "type", "id", "tool_call_id", "name", "image_url", "url", "input_audio",
        "data", "format", "file", "file_data", "file_id", "media_type", "source",
        "cache_control", "detail", "filename", "mime_type",
    }
)


class RedactionSession:
    """Placeholders for the personal data of one program call, both ways."""

    def __init__(self) -> None:
        self._placeholder_of: dict[tuple[str, str], str] = {}
        self._value_of: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        # Parallel steps of one call (dspex.Parallel, threads) share the session.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._value_of)

    def __bool__(self) -> bool:  # a session is a session even before it holds a value
        return True

    def __repr__(self) -> str:  # never the values
        return f"RedactionSession({len(self)} placeholders)"

    def __reduce__(self) -> Any:
        # A session holds personal data: it is never pickled (shipped or saved); an
        # object that holds one gets an empty session back.
        return (RedactionSession, ())

    @contextlib.contextmanager
    def active(self) -> Iterator[RedactionSession]:
        """Make this the session of the current context while the block runs."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    # --- text -------------------------------------------------------------------------

    def placeholder(self, value: str, kind: str) -> str:
        with self._lock:
            found = self._placeholder_of.get((kind, value))
            if found is None:
                number = self._counts.get(kind, 0) + 1
                self._counts[kind] = number
                found = f"<{kind}_{number}>"
                self._placeholder_of[(kind, value)] = found
                self._value_of[found] = value
            return found

    def redact_text(self, text: str, redactors: Sequence[Any]) -> str:
        spans = spans_of(text, redactors)
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for start, end, kind in spans:
            parts.append(text[last:start])
            parts.append(self.placeholder(text[start:end], kind))
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def restore_text(self, text: str) -> str:
        if "<" not in text or not self._value_of:
            return text
        # An LM may invent a placeholder this session never gave out: it stays as written.
        return PLACEHOLDER.sub(lambda m: self._value_of.get(m.group(0), m.group(0)), text)

    # --- values -----------------------------------------------------------------------

    def redact(self, value: Any, redactors: Sequence[Any]) -> Any:
        """``value`` with the personal data in every string inside it replaced (lists,
        tuples, dicts, Examples and Predictions, pydantic models); never changed in place."""
        if not redactors:
            return value
        return _walk(value, lambda text: self.redact_text(text, redactors))

    def restore(self, value: Any) -> Any:
        """``value`` with this session's placeholders put back, wherever `redact` reaches."""
        if not self._value_of:
            return value
        return _walk(value, self.restore_text)

    def redact_messages(self, messages: Sequence[Any], redactors: Sequence[Any]) -> list[Any]:
        """Chat messages with the text of each redacted (content, text parts, tool-call
        arguments), its structure (roles, ids, media) untouched."""
        return [_walk(m, lambda text: self.redact_text(text, redactors), skip=_STRUCTURAL_KEYS) for m in messages]


# --- walking values ---------------------------------------------------------------------

T = TypeVar("T")


# An image, audio or file inlined as base64 (a dspex.Image's url): media, not text.
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,")


def _walk(value: Any, on_text: Callable[[str], str], skip: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, str):
        return value if _DATA_URI.match(value) else on_text(value)
    if value is None or isinstance(value, int | float | bool | bytes):
        return value
    if isinstance(value, list):
        return [_walk(v, on_text, skip) for v in value]
    if isinstance(value, tuple):
        items = [_walk(v, on_text, skip) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, Mapping) and not hasattr(value, "_store"):
        walked = {k: (v if k in skip else _walk(v, on_text, skip)) for k, v in value.items()}
        return walked if type(value) is dict else _rebuilt_mapping(value, walked)
    store = getattr(value, "__dict__", {}).get("_store")
    if isinstance(store, dict):  # an Example or a Prediction (and its completions)
        return _walked_example(value, store, on_text)
    if _is_pydantic_model(value):
        return _walked_model(value, on_text)
    return value


def _rebuilt_mapping(original: Mapping[Any, Any], walked: dict[Any, Any]) -> Any:
    try:
        return type(original)(walked)
    except Exception:
        return walked


def _walked_example(value: Any, store: dict[str, Any], on_text: Callable[[str], str]) -> Any:
    new = copy.copy(value)
    object.__setattr__(new, "_store", {k: _walk(v, on_text) for k, v in store.items()})
    completions = value.__dict__.get("_completions")
    rows = getattr(completions, "_items", None)
    if isinstance(rows, list):
        fresh = copy.copy(completions)
        object.__setattr__(fresh, "_items", [_walk(row, on_text) for row in rows])
        object.__setattr__(new, "_completions", fresh)
    return new


def _is_pydantic_model(value: Any) -> bool:
    return hasattr(type(value), "model_fields") and hasattr(value, "model_copy")


def _walked_model(value: Any, on_text: Callable[[str], str]) -> Any:
    update: dict[str, Any] = {}
    for name in type(value).model_fields:
        field_value = getattr(value, name, None)
        walked = _walk(field_value, on_text)
        if walked is not field_value:
            update[name] = walked
    # model_copy does not validate: a placeholder stands where, say, an EmailStr was.
    return value.model_copy(update=update) if update else value


# --- where sessions open ------------------------------------------------------------------


def current_session() -> RedactionSession | None:
    """The session of the program call running in this context, if any."""
    return _active.get()


def outermost_session() -> RedactionSession | None:
    """A new session for a module call when it is the outermost one and redactors are
    configured; None otherwise (inner calls run within their caller's session)."""
    if _active.get() is not None or not configured_redactors():
        return None
    return RedactionSession()


def redact_call(session: RedactionSession, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A module call's arguments, redacted with the configured redactors."""
    redactors = configured_redactors()
    return tuple(session.redact(a, redactors) for a in args), {
        k: session.redact(v, redactors) for k, v in kwargs.items()
    }


def reveal(value: T) -> T:
    """``value`` with the active session's placeholders put back: for code inside a
    program that must act on the real data (a tool sending the e-mail), never for
    anything sent to an LM or recorded. Unchanged outside a redacted call."""
    session = _active.get()
    return value if session is None else session.restore(value)


def redacted_in_session(value: T) -> T:
    """``value`` redacted with the active session (what a tool returns to the program);
    unchanged outside a redacted call."""
    session = _active.get()
    if session is None:
        return value
    return session.redact(value, configured_redactors())  # type: ignore[no-any-return]


def redact_personal_data(text: str) -> str:
    """``text`` as logs and events show it: personal data replaced (the active session's
    placeholders inside a program call). Unchanged without redactors."""
    redactors = configured_redactors()
    if not redactors:
        return text
    session = _active.get()
    return (RedactionSession() if session is None else session).redact_text(text, redactors)


@contextlib.contextmanager
def shared_placeholders() -> Iterator[None]:
    """Within the block, text redacted outside a program call shares one session, so two
    addresses in one record get two placeholders (<EMAIL_1>, <EMAIL_2>), not one each
    numbered 1. Inside a program call (or without redactors) nothing changes."""
    if _active.get() is not None or not configured_redactors():
        yield
        return
    with RedactionSession().active():
        yield


def redacted_for_storage(value: T) -> T:
    """``value`` with the personal data the configured redactors find replaced, for what
    is written to lasting storage (the run store): with the active session's placeholders
    inside a program call, a fresh session's otherwise. Unchanged without redactors."""
    redactors = configured_redactors()
    if not redactors:
        return value
    session = _active.get()
    return (RedactionSession() if session is None else session).redact(value, redactors)  # type: ignore[no-any-return]


class RestoringStream:
    """Restores a session's placeholders in a text that arrives in chunks (a streamed
    field): a chunk ending inside a placeholder (``<EMA``) holds that tail back until
    the next chunk completes it, so the reader never sees half a placeholder."""

    _LONGEST_TAIL = 64  # longer than any placeholder: a "<" that far back is just text

    def __init__(self, session: RedactionSession) -> None:
        self._session = session
        self._held = ""

    def feed(self, chunk: str, last: bool = False) -> str:
        """The restored text to show for ``chunk`` (empty while a tail is held back)."""
        text = self._held + chunk
        self._held = ""
        if not last:
            start = text.rfind("<", max(0, len(text) - self._LONGEST_TAIL))
            if start >= 0 and _PARTIAL_PLACEHOLDER.fullmatch(text, start):
                text, self._held = text[:start], text[start:]
        return self._session.restore_text(text)


_PARTIAL_PLACEHOLDER = re.compile(r"<(?:[A-Z][A-Z0-9_]*)?")


# --- the LM client's hook ----------------------------------------------------------------

R = TypeVar("R")


def redacted_lm_call(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Decorate an LM's ``acomplete(messages, **kwargs)``: the messages are redacted
    before anything (observers, cache, history, dispatch) sees them. Outside a program
    call the LM's outputs are restored before they are returned."""

    @functools.wraps(method)
    async def redacted(lm: Any, messages: Any, **kwargs: Any) -> R:
        redactors = configured_redactors()
        if not redactors:
            return await method(lm, messages, **kwargs)
        session = _active.get()
        if session is not None:
            return await method(lm, session.redact_messages(messages, redactors), **kwargs)
        session = RedactionSession()
        response = await method(lm, session.redact_messages(messages, redactors), **kwargs)
        return _restored_response(session, response)

    return redacted


def redacted_sync_lm_call(method: Callable[..., R]) -> Callable[..., R]:
    """`redacted_lm_call` for a synchronous ``__call__(prompt=None, messages=None, **kw)``
    returning output texts."""

    @functools.wraps(method)
    def redacted(lm: Any, prompt: Any = None, messages: Any = None, **kwargs: Any) -> R:
        redactors = configured_redactors()
        if not redactors:
            return method(lm, prompt, messages, **kwargs)
        session = _active.get()
        own = session is None
        if session is None:
            session = RedactionSession()
        if prompt is not None:
            prompt = session.redact_text(str(prompt), redactors)
        if messages is not None:
            messages = session.redact_messages(messages, redactors)
        result = method(lm, prompt, messages, **kwargs)
        return session.restore(result) if own else result

    return redacted


def _restored_response(session: RedactionSession, response: Any) -> Any:
    outputs = getattr(response, "outputs", None)
    if outputs is None or not dataclasses.is_dataclass(response):
        return session.restore(response)
    return dataclasses.replace(response, outputs=session.restore(list(outputs)))


__all__ = [
    "PLACEHOLDER",
    "RedactionSession",
    "RestoringStream",
    "configured_redactors",
    "current_session",
    "outermost_session",
    "redact_call",
    "redact_personal_data",
    "redacted_in_session",
    "redacted_for_storage",
    "redacted_lm_call",
    "redacted_sync_lm_call",
    "reveal",
    "shared_placeholders",
]
