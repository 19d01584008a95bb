"""Signatures: the typed interface of one LM step (inputs -> outputs + instructions).

A signature is a class, written by hand::

    class QA(dspex.Signature):
        \"\"\"Answer the question with a number.\"\"\"
        question: str = dspex.InputField(desc="a question about arithmetic")
        answer: int = dspex.OutputField(desc="the result", ge=0)

or made from a string: ``dspex.Signature("question -> answer: int", "instructions")``.

Signatures are immutable values: every operation (`with_instructions`, `append`,
`delete`, ...) returns a new signature class, and two signatures with the same
instructions and fields compare equal. Their content lives in one frozen
`SignatureData` record; the class is just its handle.
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, ClassVar

from pydantic.fields import FieldInfo

from dspex.errors import SignatureError, SignatureTypeError
from dspex.signatures.field import FieldSpec, InputField, OutputField, field_role, spec_from_info
from dspex.signatures.parser import parse_signature
from dspex.signatures.types import type_name

#: Output names that would collide with the ChatAdapter's own markers.
RESERVED_OUTPUT_NAMES = frozenset({"completed"})

_DATA = "__dspex_signature__"


@dataclass(frozen=True)
class SignatureData:
    fields: tuple[FieldSpec, ...]
    instructions: str
    #: True when the instructions were written by a user, not generated
    explicit_instructions: bool

    # The name -> field views, built once per signature: every predictor call reads them.
    @functools.cached_property
    def by_name(self) -> Mapping[str, FieldSpec]:
        return MappingProxyType({f.name: f for f in self.fields})

    @functools.cached_property
    def inputs(self) -> Mapping[str, FieldSpec]:
        return MappingProxyType({f.name: f for f in self.fields if f.kind == "input"})

    @functools.cached_property
    def outputs(self) -> Mapping[str, FieldSpec]:
        return MappingProxyType({f.name: f for f in self.fields if f.kind == "output"})

    def __getstate__(self) -> dict[str, Any]:
        # The cached views are rebuilt on use (a mappingproxy does not pickle).
        return {
            "fields": self.fields,
            "instructions": self.instructions,
            "explicit_instructions": self.explicit_instructions,
        }


def default_instructions(fields: tuple[FieldSpec, ...]) -> str:
    inputs = ", ".join(f"`{f.name}`" for f in fields if f.kind == "input")
    outputs = ", ".join(f"`{f.name}`" for f in fields if f.kind == "output")
    if not inputs:
        return f"Produce {outputs}."
    return f"From {inputs}, produce {outputs}."


class SignatureMeta(type):
    """Builds signature classes and gives them value semantics."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any):
        data = namespace.pop(_DATA, None)
        # Field objects do not stay in the class dict (as in a pydantic model): the
        # SignatureData record is their one home, and a class dict without them is
        # one cloudpickle can rebuild by value (it re-sets every attribute it finds).
        field_values = {k: v for k, v in namespace.items() if field_role(v) is not None}
        cls = super().__new__(
            mcs, name, bases, {k: v for k, v in namespace.items() if k not in field_values}, **kwargs
        )
        if data is None:
            try:
                data = _collect_class_fields(cls, bases, {**namespace, **field_values})
            except SignatureError:
                if "__qualname__" in namespace:
                    raise  # a class statement: its fields are wrong
                # A class rebuilt by cloudpickle (a signature built at run time and shipped
                # by value) starts as an empty skeleton; its real data is set right after.
                data = SignatureData((), "", False)
        type.__setattr__(cls, _DATA, data)
        return cls

    def __call__(
        cls,
        signature: str | Mapping[str, Any] | None = None,
        instructions: str | None = None,
        *,
        custom_types: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> Any:
        if signature is None and values:
            # ``QA(question=..., answer=...)``: a record of field values (as DSPy's
            # pydantic signatures allow), not a new signature.
            return cls._instance(values)
        if signature is None:
            raise SignatureError(
                "signatures are classes: write Signature('question -> answer'), subclass "
                "Signature, or pass field values by name, e.g. QA(question=..., answer=...)"
            )
        if values:
            raise SignatureError(
                f"unexpected arguments {sorted(values)} when building a signature from "
                f"{signature!r}; only instructions= and custom_types= are accepted"
            )
        return make_signature(signature, instructions, custom_types=custom_types)

    def _instance(cls, values: Mapping[str, Any]) -> Any:
        unknown = [name for name in values if name not in cls.fields]
        if unknown:
            raise SignatureError(
                f"{cls.__name__} has no field(s) {unknown}; its fields are {list(cls.fields)}"
            )
        instance = object.__new__(cls)  # type: ignore[call-overload]
        instance.__dict__.update(values)
        return instance

    def __setattr__(cls, name: str, value: Any) -> None:
        # What a signature means (its fields, its instructions and the operations on
        # them) cannot be changed in place. Other attributes (a user's helper method,
        # a class constant) are left to Python: cloudpickle re-sets them when it
        # rebuilds a class defined in a user's script on a Ray worker.
        protected = name in cls.fields or (hasattr(SignatureMeta, name) and not name.startswith("__"))
        if not protected:
            type.__setattr__(cls, name, value)
            return
        raise SignatureError(
            f"signatures are immutable: cannot set {name!r} on {cls.__name__}; "
            "use with_instructions(), with_updated_fields(), append() or delete(), "
            "which return a new signature"
        )

    # --- content -----------------------------------------------------------

    @property
    def _data(cls) -> SignatureData:
        return cls.__dict__.get(_DATA) or getattr(cls, _DATA)

    @property
    def instructions(cls) -> str:
        return cls._data.instructions

    @property
    def fields(cls) -> Mapping[str, FieldSpec]:
        return cls._data.by_name

    @property
    def input_fields(cls) -> Mapping[str, FieldSpec]:
        return cls._data.inputs

    @property
    def output_fields(cls) -> Mapping[str, FieldSpec]:
        return cls._data.outputs

    @property
    def signature(cls) -> str:
        """The fields as a string: ``"question, context -> answer"``."""
        inputs = ", ".join(cls.input_fields)
        outputs = ", ".join(cls.output_fields)
        return f"{inputs} -> {outputs}"

    # --- value semantics -------------------------------------------------------

    def equals(cls, other: Any) -> bool:
        if not isinstance(other, SignatureMeta):
            return False
        mine, theirs = cls._data, other._data
        return (
            mine.instructions == theirs.instructions
            and len(mine.fields) == len(theirs.fields)
            and all(a.same_as(b) for a, b in zip(mine.fields, theirs.fields, strict=True))
        )

    def __eq__(cls, other: Any) -> bool:
        if cls is other:
            return True
        if isinstance(other, SignatureMeta):
            return cls.equals(other)
        return NotImplemented

    def __hash__(cls) -> int:
        data = cls._data
        return hash((data.instructions, tuple((f.name, f.kind, f.desc) for f in data.fields)))

    def __repr__(cls) -> str:
        def render(kind: str) -> str:
            return ", ".join(
                f"{f.name}: {type_name(f.annotation)}" for f in cls._data.fields if f.kind == kind
            )

        return f"{cls.__name__}({render('input')} -> {render('output')}; instructions={cls.instructions!r})"

    # --- operations returning new signatures -------------------------------------

    def with_instructions(cls, instructions: str) -> type[Signature]:
        if not isinstance(instructions, str):
            raise SignatureError(f"instructions must be a str, got {type(instructions).__name__}")
        return cls._derive(cls._data.fields, instructions, True)

    def append_instructions(cls, instructions: str) -> type[Signature]:
        """A copy whose instructions are these ones followed by ``instructions``
        (after a blank line); the fields stay as they are."""
        if not isinstance(instructions, str):
            raise SignatureError(f"instructions must be a str, got {type(instructions).__name__}")
        return cls._derive(cls._data.fields, f"{cls.instructions}\n\n{instructions}", True)

    def append(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(-1, name, field, type_)

    def prepend(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(0, name, field, type_)

    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """Insert a field at ``index`` among the fields of its kind (inputs or outputs)."""
        if field_role(field) is None:
            raise SignatureError(
                f"field {name!r} must be made with InputField() or OutputField(), got {field!r}"
            )
        spec = spec_from_info(name, str if type_ is None else type_, field, typed=type_ is not None)
        _check_field_name(spec)
        if name in cls.fields:
            raise SignatureError(f"{cls.__name__} already has a field named {name!r}")
        same_kind = [f for f in cls._data.fields if f.kind == spec.kind]
        position = len(same_kind) + 1 + index if index < 0 else index
        if not 0 <= position <= len(same_kind):
            raise SignatureError(
                f"index {index} is out of range for the {len(same_kind)} {spec.kind} fields"
            )
        same_kind.insert(position, spec)
        inputs = [f for f in cls._data.fields if f.kind == "input"]
        outputs = [f for f in cls._data.fields if f.kind == "output"]
        if spec.kind == "input":
            inputs = same_kind
        else:
            outputs = same_kind
        return cls._derive(tuple(inputs + outputs), *_keep_instructions(cls))

    def delete(cls, name: str) -> type[Signature]:
        if name not in cls.fields:
            raise SignatureError(f"{cls.__name__} has no field {name!r}; fields: {list(cls.fields)}")
        fields = tuple(f for f in cls._data.fields if f.name != name)
        return cls._derive(fields, *_keep_instructions(cls))

    def with_updated_fields(cls, name: str, type_: Any = None, **changes: Any) -> type[Signature]:
        """A copy with field ``name`` changed: its type and any of ``desc=``,
        ``prefix=`` or other metadata keys (kept in its ``json_schema_extra``)."""
        if name not in cls.fields:
            raise SignatureError(f"{cls.__name__} has no field {name!r}; fields: {list(cls.fields)}")
        old = cls.fields[name]
        desc = changes.pop("desc", None)
        prefix = changes.pop("prefix", None)
        info = old.info
        if changes:
            extra = dict(info.json_schema_extra) if isinstance(info.json_schema_extra, dict) else {}
            extra.update(changes)
            info = copy.copy(info)
            info.json_schema_extra = extra
        new = old.replace(
            annotation=old.annotation if type_ is None else type_,
            typed=old.typed or type_ is not None,
            desc=old.desc if desc is None else desc,
            prefix=old.prefix if prefix is None else prefix,
            info=info,
        )
        fields = tuple(new if f.name == name else f for f in cls._data.fields)
        return cls._derive(fields, *_keep_instructions(cls))

    def dump_state(cls) -> dict[str, Any]:
        """Instructions and, per field in order, its prefix and description (DSPy's
        shape, so saved programs move between the two)."""
        return {
            "instructions": cls.instructions,
            "fields": [
                {"prefix": f.prefix, "description": f.json_schema_extra["desc"]}
                for f in cls._data.fields
            ],
        }

    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        """A copy with the instructions and per-field prefix and description of a
        saved state. Fields are matched by position, as DSPy saves them; states from
        older dspex versions (``name``/``desc`` per field) are matched by name."""
        saved = list(state.get("fields", []))
        if saved and all("name" in f for f in saved):
            by_name = {f["name"]: f for f in saved}
            unknown = set(by_name) - set(cls.fields)
            if unknown:
                raise SignatureError(
                    f"saved state names fields {sorted(unknown)} that {cls.__name__} does not have"
                )
            saved = [by_name.get(f.name, {}) for f in cls._data.fields]
        fields = tuple(
            _load_field(spec, entry) for spec, entry in zip(cls._data.fields, saved, strict=False)
        ) + cls._data.fields[len(saved):]
        instructions = state.get("instructions", cls.instructions)
        return cls._derive(fields, instructions, True)

    def _derive(cls, fields: tuple[FieldSpec, ...], instructions: str | None, explicit: bool) -> type[Signature]:
        if not explicit or instructions is None:
            instructions, explicit = default_instructions(fields), False
        data = SignatureData(fields, instructions, explicit)
        return SignatureMeta(cls.__name__, (cls,), {_DATA: data, "__module__": cls.__module__, "__doc__": instructions})

    def __iter__(cls) -> Iterator[str]:
        return iter(cls.fields)


def _load_field(spec: FieldSpec, entry: Mapping[str, Any]) -> FieldSpec:
    desc = entry.get("description", entry.get("desc", spec.desc))
    if desc == f"${{{spec.name}}}":  # DSPy's placeholder for "no description"
        desc = ""
    return spec.replace(desc=desc or "", prefix=entry.get("prefix") or spec.prefix)


def _keep_instructions(cls: SignatureMeta) -> tuple[str | None, bool]:
    data = cls._data
    return (data.instructions, True) if data.explicit_instructions else (None, False)


def _check_field_name(spec: FieldSpec) -> None:
    if spec.name.startswith("_"):
        raise SignatureError(f"field name {spec.name!r} may not start with '_'")
    if spec.kind == "output" and spec.name in RESERVED_OUTPUT_NAMES:
        raise SignatureError(
            f"output field {spec.name!r} collides with the adapter's end marker "
            f"`[[ ## {spec.name} ## ]]`; choose another name"
        )


def _check_fields(fields: tuple[FieldSpec, ...], where: str) -> None:
    seen: set[str] = set()
    for spec in fields:
        _check_field_name(spec)
        if spec.name in seen:
            raise SignatureError(f"{where}: field {spec.name!r} is defined twice")
        seen.add(spec.name)
    if not any(f.kind == "output" for f in fields) and fields:
        raise SignatureError(f"{where}: a signature needs at least one OutputField")


def _collect_class_fields(cls: type, bases: tuple[type, ...], namespace: dict[str, Any]) -> SignatureData:
    inherited: list[FieldSpec] = []
    inherited_data: SignatureData | None = None
    for base in bases:
        data = base.__dict__.get(_DATA) if isinstance(base, SignatureMeta) else None
        if data is not None:
            inherited.extend(data.fields)
            inherited_data = inherited_data or data
    own = list(_own_fields(cls, namespace))
    own_names = {f.name for f in own}
    fields = tuple(f for f in inherited if f.name not in own_names) + tuple(own)
    # Inputs first, then outputs, each in definition order.
    fields = tuple(f for f in fields if f.kind == "input") + tuple(f for f in fields if f.kind == "output")
    _check_fields(fields, f"signature class {cls.__name__}")
    doc = namespace.get("__doc__")
    is_root = not any(isinstance(b, SignatureMeta) for b in bases)
    if doc and doc.strip() and not is_root:
        return SignatureData(fields, inspect.cleandoc(doc), True)
    if inherited_data is not None and inherited_data.explicit_instructions:
        return SignatureData(fields, inherited_data.instructions, True)
    return SignatureData(fields, default_instructions(fields), False)


def _own_fields(cls: type, namespace: dict[str, Any]) -> Iterator[FieldSpec]:
    annotations: dict[str, Any] = dict(namespace.get("__annotations__", {}))
    # Definition order: the class body's namespace keeps it for fields with a value,
    # annotated or not; names only annotated (no value) come after.
    names = [k for k in namespace if k not in ("__annotations__",)] + [
        k for k in annotations if k not in namespace
    ]
    for name in names:
        value = namespace.get(name)
        role = field_role(value)
        if name.startswith("__") or (role is None and name not in annotations):
            continue
        annotation = annotations.get(name)
        if role is None:
            if _is_classvar(annotation):
                continue
            raise SignatureTypeError(
                f"{cls.__name__}.{name} has a type but no InputField() or OutputField(); "
                f"write `{name}: ... = dspex.InputField()` (or OutputField())"
            )
        if isinstance(annotation, str):
            annotation = _resolve_string_annotation(cls, name, annotation, namespace)
        typed = annotation is not None
        # The pydantic field object stays in the class dict; the spec is the source of truth.
        yield spec_from_info(name, str if annotation is None else annotation, value, typed=typed)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return typing.get_origin(annotation) is ClassVar or annotation is ClassVar


def _resolve_string_annotation(cls: type, name: str, annotation: str, namespace: dict[str, Any]) -> Any:
    module = sys.modules.get(cls.__module__)
    scope: dict[str, Any] = dict(vars(module)) if module else {}
    scope.update(_caller_names(skip_dspex=True))
    scope.update(namespace)
    try:
        return eval(annotation, scope)  # annotations are code the user wrote in their class
    except Exception as exc:
        raise SignatureError(
            f"{cls.__name__}.{name}: cannot resolve type {annotation!r} ({exc})"
        ) from None


def _caller_names(*, skip_dspex: bool) -> dict[str, Any]:
    """Names visible in the nearest frame outside dspex (for user-defined types)."""
    frame = sys._getframe(1)
    while frame is not None and skip_dspex and frame.f_globals.get("__name__", "").startswith("dspex."):
        frame = frame.f_back
    if frame is None:
        return {}
    names = dict(frame.f_globals)
    names.update(frame.f_locals)
    return names


class _CallerTypes(Mapping[str, Any]):
    """Types defined where a string signature is written, found on demand."""

    def __init__(self, explicit: Mapping[str, Any]) -> None:
        self.explicit = explicit
        self._caller: dict[str, Any] | None = None

    def _lookup(self) -> dict[str, Any]:
        if self._caller is None:
            self._caller = {
                # Modules too, so a dotted type resolves through the caller's own import
                # (`dspex.Tool`, or `dspy.Tool` after `import dspex as dspy`).
                k: v
                for k, v in _caller_names(skip_dspex=True).items()
                if isinstance(v, (type, ModuleType)) or k[:1].isupper()
            }
        return self._caller

    def __getitem__(self, key: str) -> Any:
        if key in self.explicit:
            return self.explicit[key]
        return self._lookup()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.explicit or (isinstance(key, str) and key in self._lookup())

    def __iter__(self) -> Iterator[str]:
        return iter({**self._lookup(), **self.explicit})

    def __len__(self) -> int:
        return len(set(self._lookup()) | set(self.explicit))


def make_signature(
    signature: str | Mapping[str, Any],
    instructions: str | None = None,
    *,
    custom_types: Mapping[str, Any] | None = None,
    name: str = "StringSignature",
) -> type[Signature]:
    """Build a signature from a string (``"a, b: int -> c"``) or a dict of fields."""
    if isinstance(signature, str):
        inputs, outputs = parse_signature(signature, _CallerTypes(custom_types or {}))
        specs = tuple(
            spec_from_info(n, t, (InputField() if kind == "input" else OutputField()), typed=typed)
            for kind, group in (("input", inputs), ("output", outputs))
            for n, t, typed in group
        )
        where = f"signature {signature!r}"
    elif isinstance(signature, Mapping):
        specs = tuple(_spec_from_mapping_item(n, v) for n, v in signature.items())
        specs = tuple(f for f in specs if f.kind == "input") + tuple(f for f in specs if f.kind == "output")
        where = "signature dict"
    else:
        raise SignatureError(
            f"a signature must be a string like 'question -> answer' or a dict of fields, "
            f"got {type(signature).__name__}"
        )
    _check_fields(specs, where)
    if instructions is not None and not isinstance(instructions, str):
        raise SignatureError(f"instructions must be a str, got {type(instructions).__name__}")
    explicit = bool(instructions and instructions.strip())
    data = SignatureData(specs, instructions if explicit else default_instructions(specs), explicit)
    return SignatureMeta(name, (Signature,), {_DATA: data, "__module__": "dspex.signatures", "__doc__": data.instructions})


def _spec_from_mapping_item(name: str, value: Any) -> FieldSpec:
    if isinstance(value, tuple) and len(value) == 2 and field_role(value[1]) is not None:
        return spec_from_info(name, value[0], value[1])
    if field_role(value) is not None:
        annotation = value.annotation if value.annotation is not None else str
        return spec_from_info(name, annotation, value, typed=value.annotation is not None)
    raise SignatureError(
        f"field {name!r}: expected InputField()/OutputField() or (type, field), got {value!r}"
    )


def ensure_signature(signature: str | type[Signature], instructions: str | None = None) -> type[Signature]:
    """Accept a signature class or string wherever a module takes a signature."""
    if isinstance(signature, SignatureMeta):
        if instructions is not None:
            return signature.with_instructions(instructions)
        return signature  # type: ignore[return-value]
    if isinstance(signature, str | Mapping):
        return make_signature(signature, instructions)
    raise SignatureError(
        f"expected a Signature class or a string like 'question -> answer', got {signature!r}"
    )


class Signature(metaclass=SignatureMeta):
    """Base class of signatures. See the module docstring."""

    __dspex_signature__: ClassVar[SignatureData]
