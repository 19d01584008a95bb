"""Reading the prompts dspex's adapters write (the contract is in DESIGN of the
simulated LM and in `dspex.adapters`):

* a system message listing ``Input fields:`` and ``Output fields:`` as
  ``- `name` (type): description`` lines, a ``Message structure:`` paragraph
  and ``Instructions:`` running to the end of the message;
* or DSPy's ChatAdapter layout of the same parts (``Your input fields are:``,
  numbered field lines, a structure paragraph, and the instructions indented
  after ``your objective is:``), so DSPy programs compared against dspex on
  this server are scored on their instructions too;
* user messages made of ``[[ ## name ## ]]`` sections followed by one line
  asking for the outputs;
* assistant messages (few-shot demos) made of output sections ending in
  ``[[ ## completed ## ]]``, or one JSON object in JSON mode.

System messages repeat across requests, so their parse is cached by text.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dspex.simlm.typespec import TypeSpec, parse_type, with_schema

Message = tuple[str, str]  # (role, text)

_SECTION = re.compile(r"^\[\[ ## (.+?) ## \]\][ \t]*$", re.M)
_INLINE_MARKER = re.compile(r"\[\[ ## (.+?) ## \]\]")
_FIELD_LINE = re.compile(r"^(?:- |\d+\. )`([^`]+)` \(")
_HEADERS = {
    "Input fields:": "inputs",
    "Output fields:": "outputs",
    "Instructions:": "instructions",
    "Your input fields are:": "inputs",
    "Your output fields are:": "outputs",
}
_STRUCTURE_STARTS = ("Message structure:", "All interactions will be structured")
_DSPY_OBJECTIVE = "In adhering to this structure, your objective is:"
JSON_PHRASE = "Reply with a JSON object"
_DSPY_JSON_PHRASE = "Respond with a JSON object"  # DSPy's JSONAdapter, when no response_format is sent
COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: TypeSpec
    description: str = ""


@dataclass(frozen=True, slots=True)
class SystemSpec:
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class Demo:
    inputs: dict[str, str]
    outputs: dict[str, Any]


@dataclass(slots=True)
class ParsedPrompt:
    system: SystemSpec
    json_mode: bool
    inputs: dict[str, str]
    demos: list[Demo] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def message_text(content: Any) -> str:
    """Text of a message's content: a string or a list of OpenAI/Anthropic parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def parse(
    messages: list[Message], *, json_requested: bool = False, schema: dict[str, Any] | None = None
) -> ParsedPrompt:
    """Parse a conversation into fields, instructions, demos and the current inputs."""
    system_text = "\n\n".join(text for role, text in messages if role == "system")
    system = parse_system(system_text)
    turns = [(role, text) for role, text in messages if role != "system"]
    last_user = next((text for role, text in reversed(turns) if role == "user"), "")
    if not system.outputs:
        system = _fallback_outputs(system, last_user, schema)
    return ParsedPrompt(
        system=system,
        json_mode=json_requested or JSON_PHRASE in last_user or _DSPY_JSON_PHRASE in last_user,
        inputs=parse_inputs(last_user),
        demos=_demos(turns),
        texts=[text for _, text in messages],
    )


@lru_cache(maxsize=2048)
def parse_system(text: str) -> SystemSpec:
    """Fields and instructions of a system message (cached: it repeats across calls)."""
    groups: dict[str, list[str]] = {"inputs": [], "outputs": [], "instructions": []}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if current == "instructions":
            groups[current].append(line)
        elif stripped in _HEADERS:
            current = _HEADERS[stripped]
        elif stripped.startswith(_DSPY_OBJECTIVE):
            current = "instructions"
            groups[current].append(stripped.removeprefix(_DSPY_OBJECTIVE))
        elif stripped.startswith(_STRUCTURE_STARTS):
            current = None
        elif current is not None:
            groups[current].append(line)
    # DSPy indents instruction lines by eight spaces; dspex writes them flush.
    instructions = textwrap.dedent("\n".join(groups["instructions"]).strip("\n")).strip()
    return SystemSpec(
        inputs=tuple(_fields(groups["inputs"])),
        outputs=tuple(_fields(groups["outputs"])),
        instructions=instructions,
    )


def _fields(lines: list[str]) -> list[Field]:
    """Group field lines with their continuation lines, then parse each entry."""
    entries: list[list[str]] = []
    for line in lines:
        if _FIELD_LINE.match(line):
            entries.append([line])
        elif entries:
            entries[-1].append(line)
    return [f for f in (_field("\n".join(e).strip()) for e in entries) if f is not None]


def _field(entry: str) -> Field | None:
    match = _FIELD_LINE.match(entry)
    if match is None:
        return None
    start = match.end()
    end = _closing_paren(entry, start)
    if end < 0:
        return Field(match.group(1), parse_type("str"))
    description = entry[end + 1 :].lstrip(":").strip()
    description, schema = _split_schema(description)
    return Field(match.group(1), with_schema(parse_type(entry[start:end]), schema), description)


def _closing_paren(text: str, start: int) -> int:
    """Index of the `)` closing a type that starts at `start`, aware of brackets and quotes."""
    depth, quote = 0, ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in "])":
            if depth == 0 and ch == ")":
                return i
            depth -= 1
    return -1


def _split_schema(description: str) -> tuple[str, dict[str, Any] | None]:
    """Separate a JSON schema written after a field's description."""
    brace = description.find("{")
    if brace < 0:
        return description, None
    try:
        schema, _ = json.JSONDecoder().raw_decode(description[brace:])
    except json.JSONDecodeError:
        return description, None
    head = description[:brace].strip()
    head = head.removesuffix("JSON schema:").removesuffix("Schema:").strip()
    return head, schema if isinstance(schema, dict) else None


@lru_cache(maxsize=8192)
def _sections(text: str) -> tuple[tuple[str, str], ...]:
    """The ``[[ ## name ## ]]`` sections of a message, in order, values stripped."""
    marks = list(_SECTION.finditer(text))
    out = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((mark.group(1).strip(), text[mark.end() : end].strip()))
    return tuple(out)


def parse_inputs(text: str) -> dict[str, str]:
    """Input sections of a user message, without the trailing request line."""
    sections = [(n, v) for n, v in _sections(text) if n != COMPLETED]
    if sections:
        name, value = sections[-1]
        sections[-1] = (name, _drop_request_line(value))
    return dict(sections)


def _drop_request_line(value: str) -> str:
    head, sep, tail = value.rpartition("\n\n")
    if sep and (_INLINE_MARKER.search(tail) or JSON_PHRASE in tail or tail.startswith("Respond")):
        return head.strip()
    return value


def parse_outputs(text: str) -> dict[str, Any]:
    """Output values of an assistant message: sections as strings, or a JSON object."""
    sections = {n: v for n, v in _sections(text) if n != COMPLETED}
    if sections:
        return sections
    return parse_json_object(text) or {}


def parse_json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _demos(turns: list[Message]) -> list[Demo]:
    """User/assistant pairs before the final user message."""
    demos = []
    for (role, text), (next_role, reply) in itertools.pairwise(turns):
        if role == "user" and next_role == "assistant":
            demos.append(Demo(parse_inputs(text), parse_outputs(reply)))
    return demos


def _fallback_outputs(
    system: SystemSpec, last_user: str, schema: dict[str, Any] | None
) -> SystemSpec:
    """Outputs for prompts without an ``Output fields:`` list: a response schema's
    properties, else the markers the request line names."""
    if schema and isinstance(schema.get("properties"), dict):
        defs = schema.get("$defs", {})
        outputs = tuple(
            Field(name, TypeSpec("schema", schema={**prop, "$defs": defs}))
            for name, prop in schema["properties"].items()
        )
    else:
        tail = last_user.rpartition("\n\n")[2]
        names = dict.fromkeys(m for m in _INLINE_MARKER.findall(tail) if m != COMPLETED)
        outputs = tuple(Field(name, parse_type("str")) for name in names)
    return SystemSpec(system.inputs, outputs, system.instructions)
