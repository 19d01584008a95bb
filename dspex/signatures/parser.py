"""Parse signature strings: ``"context: list[str], question -> answer: int"``.

Each side of the arrow is read as the parameter list of a Python function, so
Python's own parser handles names, commas inside brackets and string literals;
we then check what Python would allow but a signature must not.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Mapping
from typing import Any

from dspex.errors import SignatureError
from dspex.signatures.types import resolve_type

ParsedField = tuple[str, Any, bool]
"""(name, type, whether a type was written)"""


def parse_signature(
    text: str, custom_types: Mapping[str, Any]
) -> tuple[list[ParsedField], list[ParsedField]]:
    """Split and parse a signature string into input and output fields."""
    if not isinstance(text, str):
        raise SignatureError(f"a signature string was expected, got {type(text).__name__}")
    arrows = text.count("->")
    if arrows == 0:
        raise SignatureError(
            f"signature {text!r} has no '->': write inputs, then '->', then outputs, "
            "e.g. 'question -> answer'"
        )
    if arrows > 1:
        raise SignatureError(
            f"signature {text!r} has {arrows} '->'; exactly one separates inputs from outputs"
        )
    left, right = text.split("->")
    inputs = _parse_side(left, "inputs", text, custom_types)
    outputs = _parse_side(right, "outputs", text, custom_types)
    if not outputs:
        raise SignatureError(f"signature {text!r} has no output fields after '->'")
    _check_names(inputs, outputs, text)
    return inputs, outputs


def _parse_side(
    side: str, which: str, text: str, custom_types: Mapping[str, Any]
) -> list[ParsedField]:
    side = side.strip()
    if not side:
        return []
    try:
        tree = ast.parse(f"def _({side}): pass")
    except SyntaxError as exc:
        raise SignatureError(
            f"cannot read the {which} of signature {text!r}: {_explain(side, exc)}"
        ) from None
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.defaults or args.posonlyargs:
        raise SignatureError(
            f"the {which} of signature {text!r} must be a plain list of 'name' or 'name: type'"
        )
    fields: list[ParsedField] = []
    for arg in args.args:
        if arg.annotation is None:
            fields.append((arg.arg, str, False))
        else:
            fields.append((arg.arg, resolve_type(arg.annotation, field=arg.arg, custom_types=custom_types), True))
    return fields


def _explain(side: str, exc: SyntaxError) -> str:
    for part in _top_level_names(side):
        if keyword.iskeyword(part):
            return f"{part!r} is a Python keyword and cannot name a field"
        if part and not part.isidentifier():
            return f"{part!r} is not a valid field name (use letters, digits and '_')"
    return exc.msg


def _top_level_names(side: str) -> list[str]:
    """The field names of one side, split on commas outside brackets (for error messages)."""
    names, depth, current = [], 0, ""
    for char in side:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += char
    names.append(current)
    return [n.split(":")[0].strip() for n in names]


def _check_names(inputs: list[ParsedField], outputs: list[ParsedField], text: str) -> None:
    seen: dict[str, str] = {}
    for kind, fields in (("input", inputs), ("output", outputs)):
        for name, _, _ in fields:
            if name in seen:
                if seen[name] == kind:
                    raise SignatureError(f"signature {text!r} names field {name!r} twice")
                raise SignatureError(
                    f"signature {text!r} uses {name!r} as both an input and an output; inputs "
                    "and outputs need distinct names, so rename one"
                )
            seen[name] = kind
