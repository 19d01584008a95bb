"""The simulated LM as a tool-using agent, for `dspex.ReAct`'s prompts.

A step prompt asks for ``next_thought``, ``next_tool_name`` and
``next_tool_args``; its instructions list the tools (dspex's
``(1) name: description Arguments (JSON schema per argument): {...}`` lines, or
DSPy's ``(1) name, whose description is <desc>...</desc>. It takes arguments
{...}.``). The agent:

* once the trajectory holds an observation, calls ``finish``;
* else, when the question names a tool (``use the `x` tool``), calls that
  tool, listed or not (as a model told to would), so the unknown-tool path
  can be exercised;
* else picks the listed tool that fits the question best: a calculator-like
  tool for a question holding arithmetic, otherwise the tool whose name
  shares the most words with the question; with no fit, ``finish``.

Arguments come from the question: the arithmetic expression, numbers for
numeric arguments, and otherwise its subject (a quoted phrase, the words after
a final "of/in/for/about", or the last capitalised word). A numeric argument
the question holds no number for gets the subject text, which the tool then
rejects (the bad-arguments path).

The extraction step (the signature's outputs, given the trajectory) answers
with the last observation that is not an error.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from dspex.simlm.prompt import Field, ParsedPrompt

_STEP_OUTPUTS = frozenset({"next_thought", "next_tool_name", "next_tool_args"})
_FINISH = "finish"
_DSPEX_TOOL_LINE = re.compile(r"^\(\d+\) (\S+?): .*?Arguments \(JSON schema per argument\): (\{.*\})\s*$")
_DSPY_TOOL_LINE = re.compile(r"^\(\d+\) (\S+?)(?:, whose description is .*?)?\.? It takes arguments (\{.*\})\.\s*$")
_EXPRESSION = re.compile(r"[-(]*\d[\d.]*\s*(?:[-+*/^x\u00d7]\s*[-(]*\d[\d.]*\)*\s*)+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_NAMED_TOOL = re.compile(r"(?:use|call)\s+the\s+`?([A-Za-z_]\w*)`?\s+tool|tool\s+`([A-Za-z_]\w*)`", re.IGNORECASE)
_QUOTED = re.compile(r"[\"“']([^\"”']{2,80})[\"”']")
_SUBJECT = re.compile(r"\b(?:of|in|for|about|on)\s+([^?.!,;]+?)\s*[?.!]?\s*$", re.IGNORECASE)
_MATH_WORDS = ("calc", "math", "arith", "comput", "eval", "add", "sum", "multipl", "divid")
_GENERIC_WORDS = frozenset({"get", "lookup", "look", "up", "search", "find", "query", "fetch", "tool"})
_OBSERVATION_KEY = re.compile(r"^observation_(\d+)$")
_ERROR_PREFIXES = ("Execution error in", "Unknown tool", "next_tool_args must be", "The step could not be read")


def is_agent_step(outputs: tuple[Field, ...]) -> bool:
    return {f.name for f in outputs} >= _STEP_OUTPUTS


def step_values(prompt: ParsedPrompt) -> dict[str, Any]:
    """next_thought, next_tool_name, next_tool_args for a ReAct step prompt."""
    names = _tool_names(prompt)
    if observations(prompt.inputs):
        if answer_from_trajectory(prompt.inputs) is None:
            return _choice("The tool gave no usable result; I finish with what I have.", _FINISH, {})
        return _choice("The trajectory now holds what I need, so I can finish.", _FINISH, {})
    question = _question(prompt.inputs)
    named = _named_tool(question)
    schemas = tool_schemas(prompt.system.instructions)
    if named is not None:
        return _choice(f"The question asks me to use the `{named}` tool.", named, _arguments(named, schemas.get(named), question))
    tool = _best_tool([n for n in names if n != _FINISH], question)
    if tool is None:
        return _choice("No tool fits this question, so I finish.", _FINISH, {})
    arguments = _arguments(tool, schemas.get(tool), question)
    return _choice(f"I will call {tool} with {json.dumps(arguments)} to answer this.", tool, arguments)


def observations(inputs: dict[str, str]) -> list[str]:
    """The observations in a trajectory, oldest first (sections the adapter nested in
    the trajectory field come back as inputs of their own)."""
    found = sorted(
        (int(match.group(1)), value)
        for key, value in inputs.items()
        if (match := _OBSERVATION_KEY.match(key)) is not None
    )
    return [value for _, value in found]


def answer_from_trajectory(inputs: dict[str, str]) -> str | None:
    """The last observation that is not an error (the extraction step's answer)."""
    for value in reversed(observations(inputs)):
        text = value.strip()
        if text and not text.startswith(_ERROR_PREFIXES) and text != "Completed.":
            return _plain(text)
    return None


def tool_schemas(instructions: str) -> dict[str, dict[str, Any]]:
    """Tool name -> its arguments' JSON schemas, from the instructions' tool lines."""
    schemas: dict[str, dict[str, Any]] = {}
    for line in instructions.splitlines():
        line = line.strip()
        match = _DSPEX_TOOL_LINE.match(line) or _DSPY_TOOL_LINE.match(line)
        if match is None:
            continue
        args = _load_object(match.group(2))
        if isinstance(args, dict):
            schemas[match.group(1).rstrip(",:")] = args
    return schemas


def _tool_names(prompt: ParsedPrompt) -> list[str]:
    for f in prompt.system.outputs:
        if f.name == "next_tool_name" and f.type.name == "Literal":
            return [str(option) for option in f.type.args]
    return list(tool_schemas(prompt.system.instructions))


def _question(inputs: dict[str, str]) -> str:
    if "question" in inputs:
        return inputs["question"]
    for key, value in inputs.items():
        if key != "trajectory" and not re.match(r"^(thought|tool_name|tool_args|observation)_\d+$", key):
            return value
    return ""


def _named_tool(question: str) -> str | None:
    match = _NAMED_TOOL.search(question)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def _best_tool(names: list[str], question: str) -> str | None:
    expression = _expression(question)
    if expression is not None:
        for name in names:
            if any(word in name.lower() for word in _MATH_WORDS):
                return name
    words = set(re.findall(r"[a-z]+", question.lower()))
    best, best_score = None, 0.0
    for name in names:
        parts = [p for p in re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name) if p]
        score = sum(1.0 for p in parts if p.lower() not in _GENERIC_WORDS and p.lower() in words)
        if score == 0:
            continue  # a generic name (lookup, search) alone does not make a tool fit
        score += 0.5 * sum(1 for p in parts if p.lower() in _GENERIC_WORDS)
        if score > best_score:
            best, best_score = name, score
    return best


def _arguments(tool: str, schema: dict[str, Any] | None, question: str) -> dict[str, Any]:
    if not schema:
        return {}
    expression = _expression(question)
    numbers = [float(n) if "." in n else int(n) for n in _NUMBER.findall(question)]
    math_tool = any(word in tool.lower() for word in _MATH_WORDS)
    arguments: dict[str, Any] = {}
    for name, spec in schema.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("integer", "number"):
            if numbers:
                arguments[name] = numbers.pop(0)
            elif isinstance(spec, dict) and "default" in spec:
                continue
            else:
                arguments[name] = _subject(question)
        elif kind == "boolean":
            arguments[name] = True
        elif math_tool and expression is not None and kind in ("string", None):
            arguments[name] = expression
        elif isinstance(spec, dict) and "default" in spec:
            continue
        else:
            arguments[name] = _subject(question)
    return arguments


def _expression(question: str) -> str | None:
    match = _EXPRESSION.search(question.replace("\u00d7", "*"))
    if match is None:
        return None
    text = match.group(0).strip().replace("^", "**")
    return re.sub(r"(?<=\d)\s*x\s*(?=\d)", " * ", text)


def _subject(question: str) -> str:
    quoted = _QUOTED.search(question)
    if quoted:
        return quoted.group(1).strip()
    match = _SUBJECT.search(question.strip())
    if match:
        return re.sub(r"^(?:the|a|an)\s+", "", match.group(1).strip(), flags=re.IGNORECASE)
    capitals = re.findall(r"\b[A-Z][a-zA-Z]+\b", question)
    if len(capitals) > 1:
        return capitals[-1]
    return question.strip().rstrip("?.!")


def _choice(thought: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"next_thought": thought, "next_tool_name": name, "next_tool_args": arguments}


def _load_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _plain(text: str) -> str:
    # A JSON string result ("\"Paris\"") reads as its text; anything else stays as written.
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


# What the coder (`dspex.simlm.coder`) shares with the agent: reading a question the same way.
question_of = _question
expression_in = _expression
subject_of = _subject


def pick_tool(
    question: str, schemas: dict[str, dict[str, Any]], *, forced: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The tool an agent calls for ``question`` and its arguments, among tools given as
    name -> argument schemas: ``forced`` when given, else a tool the question names
    (listed or not), else the best fitting listed one; None when no tool fits. Shared
    with native tool calling (`dspex.simlm.tool_calls`)."""
    named = forced or _named_tool(question)
    if named is not None:
        return named, _arguments(named, schemas.get(named), question)
    tool = _best_tool([n for n in schemas if n != _FINISH], question)
    if tool is None:
        return None
    return tool, _arguments(tool, schemas.get(tool), question)
