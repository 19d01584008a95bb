"""Values crossing the sandbox's boundary, and what an execution gives back.

Everything crosses as JSON: variables going in, tool arguments and results, the last
expression's value coming out. Going in, values JSON has no type for are converted the
way pydantic writes them into a JSON body (models and dataclasses as objects, datetimes
as ISO text, tuples and sets as lists); a value with no JSON form is refused with a
`CodeInterpreterError`. Coming out, the guest turns what JSON cannot hold into its
``repr()`` text (see guest.py).
"""

from __future__ import annotations

import json
import keyword
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from dspex.errors import CodeInterpreterError


class FinalOutput:
    """What `PythonInterpreter.execute` returns when the code called ``SUBMIT(...)``:
    ``output`` is the dict of submitted fields (``{"output": value}`` for one value)."""

    def __init__(self, output: Any) -> None:
        self.output = output

    def __repr__(self) -> str:
        return f"FinalOutput({self.output!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FinalOutput) and other.output == self.output

    __hash__ = None  # type: ignore[assignment]  # mutable payload


@dataclass(frozen=True)
class ExecutionResult:
    """Everything one execution produced. ``value`` is the last expression's value
    (None when the code ended with a statement), ``final`` the SUBMIT answer when
    there was one, ``pid`` the sandbox process that ran the code."""

    value: Any
    stdout: str
    stderr: str
    pid: int
    seconds: float
    final: FinalOutput | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def output(self) -> Any:
        """DSPy's answer: the SUBMIT answer, else the value, else the printed text."""
        if self.final is not None:
            return self.final
        if self.value is not None:
            return self.value
        return self.stdout


def jsonable(value: Any, *, what: str) -> Any:
    """``value`` as plain JSON types, or a `CodeInterpreterError` naming ``what`` it was."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value  # NaN and infinities travel as JSON's NaN/Infinity extension
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return jsonable(value._asdict(), what=what)  # a namedtuple reads best as its fields
    if isinstance(value, dict):
        return {_key(k, what): jsonable(v, what=what) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, what=what) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v, what=what) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    try:
        converted = to_jsonable_python(value)
    except PydanticSerializationError:
        raise CodeInterpreterError(
            f"Unsupported value type for {what}: {type(value).__name__} has no JSON form; "
            "pass plain data (str, numbers, lists, dicts, pydantic models, dataclasses)"
        ) from None
    return converted


def _key(key: Any, what: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float) or key is None:
        return json.dumps(key)
    raise CodeInterpreterError(f"Unsupported dict key for {what}: {key!r} (JSON keys are text)")


def variables_json(variables: dict[str, Any] | None) -> str:
    """The variables as one JSON object, every name checked first."""
    if not variables:
        return "{}"
    for name in variables:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise CodeInterpreterError(
                f"Invalid variable name: {name!r}; variable names must be Python identifiers "
                "that are not keywords"
            )
    converted = {name: jsonable(value, what=f"variable {name!r}") for name, value in variables.items()}
    return json.dumps(converted, allow_nan=True, ensure_ascii=False)


def tool_result_json(value: Any) -> str:
    """A tool's result as JSON text; a result with no JSON form goes as its str()."""
    try:
        converted = jsonable(value, what="a tool result")
    except CodeInterpreterError:
        converted = str(value)
    try:
        return json.dumps(converted, allow_nan=True)
    except (TypeError, ValueError):
        return json.dumps(str(value))


__all__ = [
    "ExecutionResult",
    "FinalOutput",
    "jsonable",
    "tool_result_json",
    "variables_json",
]
