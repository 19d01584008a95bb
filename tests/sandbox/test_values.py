"""What crosses the sandbox's boundary: JSON in, JSON out (no Deno needed)."""

from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
from datetime import datetime

import pytest
from pydantic import BaseModel

from dspex.errors import CodeInterpreterError
from dspex.sandbox.values import ExecutionResult, FinalOutput, tool_result_json, variables_json


class Hit(BaseModel):
    doc: int
    at: datetime


@dataclasses.dataclass
class Box:
    x: int


Pair = namedtuple("Pair", "left right")


def test_variables_become_one_json_object() -> None:
    text = variables_json(
        {"hit": Hit(doc=1, at=datetime(2026, 1, 2)), "box": Box(3), "pair": Pair(1, 2),
         "tags": {"b", "a"}, "nums": (1, 2), "keys": {1: "one"}, "nan": float("nan")}
    )
    value = json.loads(text)
    assert value["hit"] == {"doc": 1, "at": "2026-01-02T00:00:00"}
    assert value["box"] == {"x": 3}
    assert value["pair"] == {"left": 1, "right": 2}
    assert value["tags"] == ["a", "b"] and value["nums"] == [1, 2] and value["keys"] == {"1": "one"}
    assert value["nan"] != value["nan"]
    assert variables_json(None) == "{}"


@pytest.mark.parametrize("name", ["class", "1x", "a-b", ""])
def test_variable_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(CodeInterpreterError, match="Invalid variable name"):
        variables_json({name: 1})


def test_values_without_a_json_form_are_refused_in_variables_but_stringified_from_tools() -> None:
    with pytest.raises(CodeInterpreterError, match="Unsupported value type"):
        variables_json({"x": object()})
    with pytest.raises(CodeInterpreterError, match="dict key"):
        variables_json({"x": {(1, 2): 3}})

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    assert json.loads(tool_result_json(Opaque())) == "opaque!"
    assert json.loads(tool_result_json([Box(1)])) == [{"x": 1}]


def test_execution_result_answers_like_dspy() -> None:
    base = {"stdout": "printed\n", "stderr": "", "pid": 1, "seconds": 0.0}
    assert ExecutionResult(value=3, **base).output() == 3
    assert ExecutionResult(value=None, **base).output() == "printed\n"
    final = FinalOutput({"output": 1})
    assert ExecutionResult(value=None, final=final, **base).output() == final
    assert final == FinalOutput({"output": 1}) and final != FinalOutput({"output": 2})
