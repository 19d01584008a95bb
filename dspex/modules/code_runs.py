"""Running LM-written code in the sandbox, for `ProgramOfThought` and `CodeAct`.

Each run is one `PythonInterpreter` execution of a small driver that compiles the code
in a namespace of its own, with ``print`` captured and a ``SUBMIT(...)`` function the
code may call with its final outputs. What comes back says what the code printed, the
value of its last expression and what it submitted, so concurrent runs on a pooled
interpreter never see each other's variables. CodeAct's steps name a *space*: the
namespace is kept in the sandbox process between the steps of one call (and dropped
at its end), so a step can use the variables an earlier one set.

The LM's reply is read leniently: the first fenced block (```` ```python ````), else
the text itself. A reply that is not valid Python is a `SyntaxError` found here,
before anything runs, whose message the LM sees.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from dspex.errors import CodeExecutionError, InterpreterCrashedError, InterpreterTimeoutError

#: what a run of generated code may fail with that the LM can act on: the code's own
#: error (syntax included), a run past the time limit, a sandbox the code crashed. A
#: sandbox that cannot start at all (no Deno, no Pyodide) is not among them: it raises.
REPAIRABLE = (SyntaxError, CodeExecutionError, InterpreterTimeoutError, InterpreterCrashedError)

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:\n```|$)", re.DOTALL | re.IGNORECASE)

# Runs inside the sandbox: keep it to the standard library and Python 3.11 syntax.
_DRIVER = '''
def __dspex_run(code, tool_names, space):
    import ast, contextlib, io, json
    spaces = globals().setdefault("__dspex_spaces", {})
    namespace = spaces.get(space) if space else None
    if namespace is None:
        namespace = {"__name__": "__main__"}
        for name in tool_names:
            namespace[name] = globals()[name]
        if space:
            spaces[space] = namespace
    submitted = []
    def SUBMIT(*args, **kwargs):
        submitted.append(args[0] if len(args) == 1 and not kwargs else dict(kwargs) if kwargs else list(args))
    namespace["SUBMIT"] = SUBMIT
    tree = ast.parse(code, "<generated>")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(tree, "<generated>", "exec"), namespace)
        value = eval(compile(last, "<generated>", "eval"), namespace) if last is not None else None
    return json.dumps(
        {"printed": printed.getvalue(), "value": value, "submitted": submitted},
        default=repr,
    )

def __dspex_forget(space):
    globals().get("__dspex_spaces", {}).pop(space, None)
'''


@dataclass(frozen=True)
class CodeRun:
    """What one run of generated code gave."""

    printed: str
    value: Any
    submitted: list[Any]

    def output(self) -> Any:
        """The run's result for the LM: what it submitted, else its last expression's
        value, else what it printed."""
        if self.submitted:
            return self.submitted[-1]
        if self.value is not None:
            return self.value
        return self.printed.rstrip("\n")

    def as_text(self) -> str:
        """The result as the text a prompt shows (JSON for values)."""
        result = self.output()
        if isinstance(result, str) and not self.submitted and self.value is None:
            return result
        return json.dumps(result, ensure_ascii=False, default=repr)


def extract_code(reply: Any) -> str:
    """The code in an LM's reply: its first fenced block, else the whole text."""
    text = str(reply or "")
    match = _FENCE.search(text)
    code = (match.group(1) if match else text).strip("\n")
    if not code.strip():
        raise SyntaxError("the reply holds no code: write the program in a ```python block")
    ast.parse(code, "<generated>")  # a SyntaxError here names the line for the LM
    return code


async def run_code(interpreter: Any, code: str, *, tools: list[str] = (), space: str = "") -> CodeRun:  # type: ignore[assignment]
    """Run ``code`` once in ``interpreter`` (a `PythonInterpreter`)."""
    raw = await interpreter.aexecute(
        _DRIVER + "\n__dspex_run(__dspex_code, __dspex_tools, __dspex_space)",
        variables={"__dspex_code": code, "__dspex_tools": list(tools), "__dspex_space": space},
    )
    report = json.loads(raw) if isinstance(raw, str) else raw
    return CodeRun(report["printed"], report["value"], list(report["submitted"]))


async def forget_space(interpreter: Any, space: str) -> None:
    """Drop a CodeAct call's namespace from the sandbox process."""
    await interpreter.aexecute(_DRIVER + "\n__dspex_forget(__dspex_space)", variables={"__dspex_space": space})


def describe_error(exc: BaseException) -> str:
    """An execution error as the LM should read it: type, message and the last lines
    of the sandbox's traceback, without the driver's own frames."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if "__dspex_run" not in line and 'File "<exec>"' not in line]
    return "\n".join(lines[-12:])
