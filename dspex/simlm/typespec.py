"""Field types as the prompt writes them (`int`, `list[str]`, `Literal['a', 'b']`,
`Optional[int]`, a model name with a JSON schema), and values of those types.

The simulated LM never imports the program's classes: it only reads the type
text, so it parses it with `ast` into a small tree and produces values from it.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A parsed type: a name (`int`, `list`, `Literal`, `Person`, ...) and its arguments.

    For `Literal` the arguments are the allowed values; otherwise nested specs.
    `schema` is the JSON schema the prompt gave for a model type, if any.
    """

    name: str
    args: tuple[Any, ...] = ()
    schema: dict[str, Any] | None = None

    def __hash__(self) -> int:
        return hash((self.name, self.args))


STR = TypeSpec("str")
_ELLIPSIS = TypeSpec("Ellipsis")

_ALIASES = {
    "List": "list",
    "Dict": "dict",
    "Tuple": "tuple",
    "Set": "set",
    "typing.Optional": "Optional",
}


@lru_cache(maxsize=1024)
def parse_type(text: str) -> TypeSpec:
    """Parse a type string; anything unreadable is treated as `str`."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        return _from_ast(node)
    except (SyntaxError, ValueError):
        return STR


def _from_ast(node: ast.expr) -> TypeSpec:
    if isinstance(node, ast.Name):
        return TypeSpec(_ALIASES.get(node.id, node.id))
    if isinstance(node, ast.Attribute):
        dotted = ast.unparse(node)
        return TypeSpec(_ALIASES.get(dotted, dotted.rsplit(".", 1)[-1]))
    if isinstance(node, ast.Constant) and node.value is None:
        return TypeSpec("None")
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return _ELLIPSIS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return TypeSpec("Union", (_from_ast(node.left), _from_ast(node.right)))
    if isinstance(node, ast.Subscript):
        base = _from_ast(node.value).name
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Literal":
            return TypeSpec("Literal", tuple(_literal(e) for e in elts))
        return TypeSpec(base, tuple(_from_ast(e) for e in elts))
    raise ValueError(ast.unparse(node))


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name):
        return node.id
    return ast.literal_eval(node)


def with_schema(spec: TypeSpec, schema: dict[str, Any] | None) -> TypeSpec:
    return TypeSpec(spec.name, spec.args, schema) if schema else spec


def unwrap_optional(spec: TypeSpec) -> TypeSpec:
    """`Optional[X]` and `X | None` become `X`."""
    if spec.name == "Optional" and spec.args:
        return spec.args[0]
    if spec.name == "Union":
        rest = [a for a in spec.args if isinstance(a, TypeSpec) and a.name != "None"]
        if len(rest) == 1:
            return rest[0]
    return spec


def coerce(value: Any, spec: TypeSpec) -> Any | None:
    """`value` as a value of `spec`, or None when it does not fit (the oracle then
    treats the field as not being the answer)."""
    spec = unwrap_optional(spec)
    try:
        if spec.name == "str":
            return str(value)
        if spec.name == "int" and not isinstance(value, bool):
            as_float = float(value)
            return int(as_float) if as_float.is_integer() else None
        if spec.name == "float":
            return float(value)
        if spec.name == "Literal":
            matches = [opt for opt in spec.args if str(opt).lower() == str(value).lower()]
            return matches[0] if matches else None
        if spec.name in ("Any", "object"):
            return value
    except (TypeError, ValueError):
        return None
    return None


def render_chat(value: Any) -> str:
    """A value as it goes into a `[[ ## field ## ]]` section: str as-is, else JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def sample(spec: TypeSpec, rng: random.Random, text: str, depth: int = 0) -> Any:
    """A deterministic, valid value of `spec`; `text` is used for string values."""
    spec = unwrap_optional(spec)
    name = spec.name
    if name == "Literal":
        return rng.choice(spec.args) if spec.args else text
    if name == "int":
        return rng.randint(0, 100)
    if name == "float":
        return round(rng.uniform(0, 1), 2)
    if name == "bool":
        return rng.random() < 0.5
    if name in ("list", "set", "tuple"):
        return _sample_sequence(spec, rng, text, depth)
    if name == "dict":
        key_spec = spec.args[0] if spec.args else STR
        value_spec = spec.args[1] if len(spec.args) > 1 else STR
        key = sample(key_spec, rng, "key", depth + 1)
        return {
            str(key) if not isinstance(key, (int, float, bool)) else key: sample(
                value_spec, rng, text, depth + 1
            )
        }
    if name == "Union":
        options = [a for a in spec.args if isinstance(a, TypeSpec) and a.name != "None"]
        return sample(options[0], rng, text, depth) if options else None
    if name == "None":
        return None
    if spec.schema is not None:
        return sample_schema(spec.schema, rng, text, spec.schema.get("$defs", {}), depth)
    return text


def _sample_sequence(spec: TypeSpec, rng: random.Random, text: str, depth: int) -> list[Any]:
    if spec.name == "tuple" and spec.args and spec.args[-1] != _ELLIPSIS:
        return [sample(a, rng, f"{text} {i + 1}", depth + 1) for i, a in enumerate(spec.args)]
    item = spec.args[0] if spec.args else STR
    count = 2 if depth else rng.randint(2, 3)
    return [sample(item, rng, f"{text} {i + 1}", depth + 1) for i in range(count)]


def sample_schema(
    schema: dict[str, Any], rng: random.Random, text: str, defs: dict[str, Any], depth: int = 0
) -> Any:
    """A value following a JSON schema (objects, arrays, enums, scalars, $ref)."""
    if depth > 6:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample_schema(defs.get(ref.rsplit("/", 1)[-1], {}), rng, text, defs, depth + 1)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return sample_schema(options[0], rng, text, defs, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample_schema(v, rng, f"{text} {k}", defs, depth + 1) for k, v in props.items()}
    if kind == "array":
        item = schema.get("items", {})
        return [sample_schema(item, rng, f"{text} {i + 1}", defs, depth + 1) for i in range(2)]
    scalars = {"integer": TypeSpec("int"), "number": TypeSpec("float"), "boolean": TypeSpec("bool")}
    if kind in scalars:
        return sample(scalars[kind], rng, text, depth + 1)
    return text
