"""Field types: resolving type expressions written in signature strings, and
rendering types back to text for prompts.

Signature strings are parsed with `ast`, never `eval`: only names we know
(builtins, typing constructs, and types the caller passes or defines) resolve.
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel

from dspex.errors import SignatureError

BUILTIN_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "bytes": bytes,
    "None": type(None),
    "Any": Any,
    "Optional": Optional,
    "Union": Union,
    "Literal": Literal,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
    "Set": set,
}

_MODULE_ALIASES: dict[str, Any] = {"typing": typing}


def resolve_type(
    node: ast.expr,
    *,
    field: str,
    custom_types: Mapping[str, Any],
) -> Any:
    """Turn the AST of a type expression into a Python type."""
    resolver = _TypeResolver(field=field, custom_types=custom_types)
    return resolver.resolve(node)


class _TypeResolver:
    def __init__(self, *, field: str, custom_types: Mapping[str, Any]) -> None:
        self.field = field
        self.custom_types = custom_types

    def fail(self, what: str) -> SignatureError:
        return SignatureError(f"field {self.field!r}: {what}")

    def resolve(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Constant) and node.value is None:
            return type(None)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return Union[self.resolve(node.left), self.resolve(node.right)]
        raise self.fail(f"unsupported type expression {ast.unparse(node)!r}")

    def name(self, name: str) -> Any:
        if name in self.custom_types and not isinstance(self.custom_types[name], types.ModuleType):
            return self.custom_types[name]
        if name in BUILTIN_TYPES:
            return BUILTIN_TYPES[name]
        raise self.fail(
            f"unknown type {name!r}; pass it with custom_types={{{name!r}: {name}}} "
            "or define it where the signature is created"
        )

    def attribute(self, node: ast.Attribute) -> Any:
        dotted = ast.unparse(node)
        head, *rest = dotted.split(".")
        if head in self.custom_types:
            value = self.custom_types[head]
        elif head in _MODULE_ALIASES:
            value = _MODULE_ALIASES[head]
        else:
            raise self.fail(f"unknown type {dotted!r}; pass it with custom_types=")
        for part in rest:
            if not hasattr(value, part):
                raise self.fail(f"unknown type {dotted!r}")
            value = getattr(value, part)
        return value

    def subscript(self, node: ast.Subscript) -> Any:
        base = self.resolve(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base is Literal:
            return Literal[tuple(self.literal_value(a) for a in args)]  # type: ignore[misc]
        resolved = tuple(
            ... if isinstance(a, ast.Constant) and a.value is Ellipsis else self.resolve(a) for a in args
        )
        try:
            if base is Optional:
                if len(resolved) != 1:
                    raise self.fail("Optional takes exactly one type")
                return Optional[resolved[0]]
            return base[resolved if len(resolved) > 1 else resolved[0]]
        except TypeError as exc:
            raise self.fail(f"invalid type {ast.unparse(node)!r}: {exc}") from None

    def literal_value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
        if negative and isinstance(node.operand, ast.Constant):  # type: ignore[attr-defined]
            return -node.operand.value  # type: ignore[attr-defined]
        if isinstance(node, ast.Name):
            # Literal[yes, no] is a common slip for Literal['yes', 'no']; accept it.
            return node.id
        raise self.fail(f"Literal values must be constants, got {ast.unparse(node)!r}")


def type_name(annotation: Any) -> str:
    """Render a type as the short text shown in prompts: ``list[str]``, ``Literal['a', 'b']``."""
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    if annotation is Ellipsis:  # tuple[int, ...]
        return "..."
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return f"Optional[{type_name(non_none[0])}]"
        return "Union[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if args:
            return f"{name}[" + ", ".join(type_name(a) for a in args) + "]"
        return name
    return getattr(annotation, "__name__", str(annotation))


def is_pydantic_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def literal_options(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a Literal type (also inside Optional), else None."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            options = literal_options(arg)
            if options is not None:
                return options
    return None
