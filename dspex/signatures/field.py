"""Input and output fields of a signature.

`InputField()` / `OutputField()` return a pydantic `FieldInfo` tagged with the
field's role, so pydantic constraints (`ge=0`, `max_length=...`) work as they
do on any pydantic model. A signature class turns each one into a `FieldSpec`:
an immutable record of name, role, type, description and constraints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field as _PydanticField
from pydantic.fields import FieldInfo

FieldKind = Literal["input", "output"]

_ROLE_KEY = "__dspex_role"

# Text used in prompts for pydantic's numeric and length constraints ("label: value").
_CONSTRAINT_TEXT = {
    "gt": "greater than {}",
    "ge": "greater than or equal to {}",
    "lt": "less than {}",
    "le": "less than or equal to {}",
    "multiple_of": "a multiple of {}",
    "min_length": "at least {} items long",
    "max_length": "at most {} items long",
    "allow_inf_nan": "infinite or NaN allowed: {}",
}

#: Keys of ``FieldSpec.json_schema_extra`` that dspex computes (the rest are the user's).
_DSPY_FIELD_TYPE = "__dspy_field_type"
_PREFIX_KEY = "prefix"


def InputField(*, desc: str | None = None, **constraints: Any) -> Any:
    """Declare an input field: ``question: str = InputField(desc="...")``."""
    return _make_field("input", desc, constraints)


def OutputField(*, desc: str | None = None, **constraints: Any) -> Any:
    """Declare an output field: ``answer: int = OutputField(desc="...", ge=0)``."""
    return _make_field("output", desc, constraints)


def _make_field(kind: FieldKind, desc: str | None, constraints: dict[str, Any]) -> FieldInfo:
    # DSPy's `format` and `parser` are accepted for porting convenience and ignored;
    # `prefix` is kept (signatures report and save it) but prompts name fields by name.
    constraints.pop("format", None)
    constraints.pop("parser", None)
    extra: dict[str, Any] = {_ROLE_KEY: kind}
    prefix = constraints.pop("prefix", None)
    if prefix is not None:
        extra[_PREFIX_KEY] = prefix
    if desc is not None:
        extra["desc"] = desc
    user_extra = constraints.pop("json_schema_extra", None)
    if isinstance(user_extra, dict):
        extra.update({k: v for k, v in user_extra.items() if k != _ROLE_KEY})
    return _PydanticField(json_schema_extra=extra, **constraints)


def field_role(value: Any) -> FieldKind | None:
    """The role of a value made by InputField/OutputField, or None for anything else."""
    if isinstance(value, FieldInfo) and isinstance(value.json_schema_extra, dict):
        role = value.json_schema_extra.get(_ROLE_KEY)
        if role in ("input", "output"):
            return role  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class FieldSpec:
    """One field of a signature, as the adapters and optimizers see it."""

    name: str
    kind: FieldKind
    annotation: Any
    desc: str
    info: FieldInfo
    #: False when the signature string gave no type and `str` was assumed
    typed: bool = True
    #: DSPy's field label ("Question:"); kept for saved state, not used in prompts
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.prefix:
            object.__setattr__(self, "prefix", infer_prefix(self.name) + ":")

    @property
    def json_schema_extra(self) -> dict[str, Any]:
        """The field's metadata in DSPy's shape: role, prefix, desc (``${name}`` when
        none was given), constraints in words, and any extra keys the user passed."""
        extra = self.info.json_schema_extra if isinstance(self.info.json_schema_extra, dict) else {}
        result: dict[str, Any] = {k: v for k, v in extra.items() if k != _ROLE_KEY}
        result[_DSPY_FIELD_TYPE] = self.kind
        result[_PREFIX_KEY] = self.prefix
        result["desc"] = self.desc or f"${{{self.name}}}"
        constraints = self.constraint_text()
        if constraints:
            result["constraints"] = constraints
        return result

    @property
    def default(self) -> Any:
        """The pydantic default (``PydanticUndefined`` when the field has none)."""
        return self.info.default

    @property
    def description(self) -> str | None:
        return self.desc or None

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    def constraints(self) -> dict[str, Any]:
        """The pydantic constraints on this field, e.g. ``{"ge": 0}``."""
        found: dict[str, Any] = {}
        for meta in self.info.metadata:
            for key in _CONSTRAINT_TEXT:
                value = getattr(meta, key, None)
                if value is not None:
                    found[key] = value
        return found

    def constraint_text(self) -> str:
        """Constraints in words for the prompt, e.g. ``greater than or equal to 0``."""
        return ", ".join(_CONSTRAINT_TEXT[k].format(v) for k, v in self.constraints().items())

    def replace(self, **changes: Any) -> FieldSpec:
        values = {
            "name": self.name,
            "kind": self.kind,
            "annotation": self.annotation,
            "desc": self.desc,
            "info": self.info,
            "typed": self.typed,
            "prefix": self.prefix,
        }
        values.update(changes)
        return FieldSpec(**values)

    def same_as(self, other: FieldSpec) -> bool:
        return (
            self.name == other.name
            and self.kind == other.kind
            and self.annotation == other.annotation
            and self.desc == other.desc
            and self.prefix == other.prefix
            and self.constraints() == other.constraints()
        )


def spec_from_info(name: str, annotation: Any, info: FieldInfo, *, typed: bool = True) -> FieldSpec:
    role = field_role(info)
    if role is None:
        raise TypeError(f"field {name!r} was not made by InputField() or OutputField()")
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    desc = extra.get("desc") or ""
    prefix = extra.get(_PREFIX_KEY) or ""
    return FieldSpec(
        name=name, kind=role, annotation=annotation, desc=desc, info=info, typed=typed, prefix=prefix
    )


_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def infer_prefix(name: str) -> str:
    """A field name as a title: ``someFieldName2`` and ``some_field_name_2`` become
    ``Some Field Name 2``; runs of capitals (``URL``, ``HTTPS``) stay as written."""
    words = _WORDS.findall(name)
    return " ".join(w if w.isupper() else w.capitalize() for w in words)
