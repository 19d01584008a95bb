"""`Example`: one data point (inputs and labels) as a dict with attribute access.

An Example stores its fields in ``_store`` and the names of its input fields in
``_input_keys``. Every other attribute name is a field, so a user field may be
called ``inputs`` or ``labels`` (read it with ``ex["inputs"]``: the methods of
the same name win for attribute access, as in DSPy).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from dspex.errors import InputKeysNotSetError

E = TypeVar("E", bound="Example")

# Fields whose name starts with this prefix are bookkeeping added by dspex or
# DSPy code (e.g. ``dspy_uuid``) and are hidden from keys/values/items/len.
_HIDDEN_PREFIX = "dspy_"


class Example:
    """A dict-like record with attribute access and a notion of input fields.

    >>> ex = Example(question="2+2?", answer="4").with_inputs("question")
    >>> ex.inputs().question, ex.labels().answer
    ('2+2?', '4')
    """

    _store: dict[str, Any]
    _input_keys: set[str] | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        store: dict[str, Any] = {}
        input_keys: set[str] | None = None
        if isinstance(base, Example):
            store.update(base._store)
            input_keys = None if base._input_keys is None else set(base._input_keys)
        elif base is not None:
            store.update(base)
        store.update(kwargs)
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_input_keys", input_keys)

    # --- attribute access ---------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. Dunder and private names are
        # never fields: copy/pickle probe them on half-built objects.
        if name.startswith("_"):
            raise AttributeError(name)
        store = self.__dict__.get("_store")
        if store is None or name not in store:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return store[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            self._store[name] = value

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
        elif name in self._store:
            del self._store[name]
        else:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    # --- mapping protocol ---------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return sum(1 for key in self._store if not key.startswith(_HIDDEN_PREFIX))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store))

    def keys(self, include_dspy: bool = False) -> list[str]:
        return [k for k in self._store if include_dspy or not k.startswith(_HIDDEN_PREFIX)]

    def values(self, include_dspy: bool = False) -> list[Any]:
        return [self._store[k] for k in self.keys(include_dspy)]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        return [(k, self._store[k]) for k in self.keys(include_dspy)]

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    # --- equality, repr, pickling -------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        return self._store == other._store

    def __hash__(self) -> int:
        # By value, as DSPy does (so examples can key dicts and dedupe in sets): do not
        # change an example while it is a key. Unhashable values hash by their contents.
        return hash(_frozen(self._store))

    def __repr__(self) -> str:
        fields = {k: v for k, v in self.items()}
        return f"{type(self).__name__}({fields!r}) (input_keys={self._input_keys!r})"

    def __str__(self) -> str:
        return repr(self)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Bypass __setattr__: on unpickling, _store does not exist yet.
        self.__dict__.update(state)

    # --- inputs and labels --------------------------------------------------

    def with_inputs(self: E, *keys: str) -> E:
        """A copy of this example that knows which of its fields are inputs."""
        new = self.copy()
        object.__setattr__(new, "_input_keys", set(keys))
        return new

    def inputs(self) -> Example:
        """The input fields, as an Example (that still knows its input keys)."""
        keys = self._require_input_keys("inputs")
        new = Example({k: v for k, v in self._store.items() if k in keys})
        object.__setattr__(new, "_input_keys", set(keys))
        return new

    def labels(self) -> Example:
        """The fields that are not inputs (answers, gold labels, ...)."""
        keys = self._require_input_keys("labels")
        return Example({k: v for k, v in self._store.items() if k not in keys})

    def _require_input_keys(self, method: str) -> set[str]:
        if self._input_keys is None:
            raise InputKeysNotSetError(
                f"{type(self).__name__}.{method}() needs to know the input fields: "
                f"call .with_inputs('field', ...) first, e.g. "
                f"example.with_inputs({', '.join(repr(k) for k in list(self._store)[:1])})"
            )
        return self._input_keys

    # --- copies -------------------------------------------------------------

    def copy(self: E, **overrides: Any) -> E:
        """A shallow copy (same input keys) with some fields replaced or added."""
        return type(self)(self, **overrides)

    def without(self: E, *keys: str) -> E:
        """A copy without the given fields."""
        new = self.copy()
        for key in keys:
            new._store.pop(key, None)
        return new

    def toDict(self) -> dict[str, Any]:
        """A plain dict, converting nested Examples and pydantic models too."""
        return {k: _to_plain(v) for k, v in self._store.items()}

    to_dict = toDict


def _frozen(value: Any) -> Any:
    """A hashable stand-in for ``value``: containers by their contents."""
    if isinstance(value, Mapping):
        return tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return (type(value).__name__, tuple(_frozen(v) for v in items))
    if isinstance(value, Example):
        return _frozen(value._store)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _to_plain(value: Any) -> Any:
    # Duck-typed so this module does not import pydantic at import time.
    if isinstance(value, Example):
        return value.toDict()
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump()
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
