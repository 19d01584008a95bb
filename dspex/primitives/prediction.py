"""`Prediction` (what a module returns) and `Completions` (its n candidates).

A Prediction is an Example without input semantics. It also carries the LM
usage that produced it: ``usage`` (a `Usage`, the total with calls and cost) and
``get_lm_usage()`` (per model, as DSPy gives it), and its numeric operators read a ``score`` field so
a metric may return ``Prediction(score=0.8, feedback=...)`` and still be
summed, averaged and compared like a number.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dspex.clients.types import Usage
from dspex.errors import MissingScoreError
from dspex.primitives.example import Example

_EMPTY_USAGE = Usage()


class Completions:
    """The n completions of one LM call, one dict of output fields each.

    ``completions[i]`` is a Prediction, ``completions.answer`` (or
    ``completions["answer"]``) is the list of that field's values, one per
    completion (None where a completion lacks the field).
    """

    def __init__(self, items: Completions | list[Mapping[str, Any]], signature: Any = None) -> None:
        if isinstance(items, Completions):
            signature = signature if signature is not None else items.signature
            items = items._items
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(
                    f"Completions: item {index} is a {type(item).__name__}, expected a dict "
                    "of output fields"
                )
            rows.append(dict(item))
        self._items = rows
        self.signature = signature

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Prediction]:
        return (Prediction(row) for row in self._items)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return self._field(key)
        if isinstance(key, slice):
            return Completions(self._items[key], self.signature)
        return Prediction(self._items[key])

    def __getattr__(self, name: str) -> list[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._field(name)
        except KeyError:
            raise AttributeError(f"no completion has a field {name!r}") from None

    def _field(self, name: str) -> list[Any]:
        if not any(name in row for row in self._items):
            raise KeyError(name)
        return [row.get(name) for row in self._items]

    def to_list(self) -> list[dict[str, Any]]:
        """A copy of the completions as plain dicts."""
        return [dict(row) for row in self._items]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Completions):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Completions({self._items!r})"


class Prediction(Example):
    """The output of a module: fields, optional completions and LM usage."""

    _completions: Completions | None
    _usage: Usage
    _lm_usage: dict[str, Usage]

    def __init__(self, base: Example | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        object.__setattr__(self, "_input_keys", None)
        object.__setattr__(self, "_completions", None)
        if isinstance(base, Prediction):
            object.__setattr__(self, "_usage", base._usage)
            object.__setattr__(self, "_lm_usage", dict(base._per_model()))
        else:
            object.__setattr__(self, "_usage", _EMPTY_USAGE)
            object.__setattr__(self, "_lm_usage", {})

    @classmethod
    def from_completions(
        cls, completions: Completions | list[Mapping[str, Any]], signature: Any = None
    ) -> Prediction:
        """A Prediction whose fields are the first completion's, keeping all of them."""
        view = Completions(completions, signature)
        pred = cls(view._items[0] if len(view) else None)
        object.__setattr__(pred, "_completions", view)
        return pred

    @property
    def completions(self) -> Completions:
        """All completions; a Prediction not built from completions has one: itself."""
        if self._completions is not None:
            return self._completions
        return Completions([dict(self._store)])

    @completions.setter
    def completions(self, value: Completions | list[Mapping[str, Any]]) -> None:
        object.__setattr__(self, "_completions", Completions(value))

    # --- usage ----------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """Token counts, calls and cost of the LM calls that produced this prediction."""
        return self._usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        # A total alone names no model: the per-model breakdown no longer applies.
        if not isinstance(value, Usage):
            raise TypeError(f"Prediction.usage must be a Usage, got {type(value).__name__}")
        self.set_usage(value, {})

    def set_usage(self, total: Usage, by_model: Mapping[str, Usage]) -> None:
        """Set the total usage and its breakdown per model (what dspex modules do)."""
        object.__setattr__(self, "_usage", total)
        object.__setattr__(self, "_lm_usage", dict(by_model))

    def get_lm_usage(self) -> dict[str, dict[str, Any]] | None:
        """Usage per model, as DSPy gives it: ``{model: {"prompt_tokens": ...,
        "completion_tokens": ..., "total_tokens": ..., "calls": ..., "cost": ...}}``
        (empty when no LM call was made, e.g. every answer came from the cache); None
        under ``track_usage=False``, as in DSPy."""
        from dspex.primitives.settings import settings

        if not settings.track_usage:
            return None
        return {model: usage.to_dict() for model, usage in self._per_model().items()}

    def set_lm_usage(self, usage: Usage | Mapping[str, Any]) -> None:
        """Set usage from what `get_lm_usage()` returns (per model), or from a total: a
        `Usage` or a flat dict of its fields."""
        if isinstance(usage, Usage):
            self.usage = usage
            return
        if not isinstance(usage, Mapping):
            raise TypeError(
                f"set_lm_usage takes a dict of usage per model or a Usage, got {type(usage).__name__}"
            )
        if all(isinstance(value, Mapping) for value in usage.values()):
            by_model = {str(model): _usage_from_dict(value) for model, value in usage.items()}
            total = _EMPTY_USAGE
            for part in by_model.values():
                total = total + part
            self.set_usage(total, by_model)
        else:
            self.usage = _usage_from_dict(usage)

    def _per_model(self) -> dict[str, Usage]:
        # Predictions pickled before the breakdown existed have none.
        return self.__dict__.get("_lm_usage") or {}

    # --- no input semantics -------------------------------------------------

    def with_inputs(self, *keys: str) -> Prediction:
        raise TypeError("a Prediction has no input fields; build an Example to use with_inputs()")

    def inputs(self) -> Example:
        raise TypeError("a Prediction has no input fields; its fields are all outputs")

    def labels(self) -> Example:
        raise TypeError("a Prediction has no labels; its fields are all outputs")

    # --- numbers: metrics may return Prediction(score=...) -----------------

    def __float__(self) -> float:
        return _score(self)

    def __add__(self, other: object) -> float:
        return _score(self) + _score(other)

    def __radd__(self, other: object) -> float:
        return _score(other) + _score(self)

    def __truediv__(self, other: object) -> float:
        return _score(self) / _score(other)

    def __rtruediv__(self, other: object) -> float:
        return _score(other) / _score(self)

    def __eq__(self, other: object) -> bool:
        # Against a number, compare the score (metrics); else compare fields.
        if isinstance(other, (int, float)):
            return "score" in self and _score(self) == float(other)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __lt__(self, other: object) -> bool:
        return _score(self) < _score(other)

    def __le__(self, other: object) -> bool:
        return _score(self) <= _score(other)

    def __gt__(self, other: object) -> bool:
        return _score(self) > _score(other)

    def __ge__(self, other: object) -> bool:
        return _score(self) >= _score(other)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.items())
        extra = len(self._completions) - 1 if self._completions is not None else 0
        suffix = f"\n    ({extra} more completions omitted)" if extra > 0 else ""
        return f"Prediction({fields}){suffix}"


def _usage_from_dict(values: Mapping[str, Any]) -> Usage:
    def count(name: str) -> int:
        value = values.get(name)
        return int(value) if isinstance(value, int | float) else 0

    cost = values.get("cost")
    return Usage(
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        calls=count("calls"),
        cost=float(cost) if isinstance(cost, int | float) else None,
    )


def _score(value: object) -> float:
    if isinstance(value, Prediction):
        if "score" not in value:
            raise MissingScoreError(
                "this Prediction has no 'score' field; numeric operations on a Prediction "
                f"read its score (fields: {value.keys()})"
            )
        return float(value["score"])
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"cannot combine a Prediction's score with {type(value).__name__}")
