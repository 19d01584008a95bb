"""The guest half of the sandbox: runs INSIDE Pyodide, never imported by the host.

The host sends this file's text to each new sandbox process, which makes it the module
``_dspex_guest``. Its `run` executes one piece of code in the session's globals and
returns the outcome as JSON text: the last expression's value (as JSON), the printed
output, a ``SUBMIT`` answer, or the exception with its traceback over the code's own
lines. Tools are plain functions in the globals that ask the host through the runner.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import keyword
import os
import traceback
from typing import Any

CODE_FILENAME = "<code>"

# The session: what the code defines stays here between executions (as in DSPy).
session_globals: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}


class _Submitted(BaseException):
    """Raised by SUBMIT to end the code with an answer (not an error: a BaseException so
    the code's own ``except Exception`` does not swallow it)."""


def _fallback(value: Any) -> Any:
    """JSON for what ``json`` does not know: sets as sorted lists, the rest as repr text."""
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    return repr(value)


def to_json(value: Any) -> str:
    """The value as JSON text (tuples become lists; NaN and infinities stay floats)."""
    try:
        return json.dumps(value, default=_fallback, allow_nan=True, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        # Keys that are not str/int/float/bool/None, or a cycle: the repr is all we can say.
        return json.dumps(repr(value), ensure_ascii=False)


def _outcome_json(outcome: dict[str, Any]) -> str:
    """The outcome as JSON, its ``value`` inline (one encoding, not JSON inside JSON)."""
    try:
        return json.dumps(outcome, default=_fallback, allow_nan=True, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps({**outcome, "value": repr(outcome.get("value"))}, ensure_ascii=False)


def _make_tool(name: str) -> Any:
    def tool(*args: Any, **kwargs: Any) -> Any:
        import _dspex_host  # registered by the runner

        reply = json.loads(_dspex_host.call_tool(name, to_json({"args": args, "kwargs": kwargs})))
        if reply.get("ok"):
            return json.loads(reply["value"])
        # A RuntimeError, as in DSPy, whose text names the host exception's type.
        raise RuntimeError(f"{reply.get('error_type', 'Error')}: {reply.get('message', '')}")

    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = f"Calls the host's tool {name!r}; its arguments and result travel as JSON."
    return tool


def _make_submit(outputs: list[dict[str, Any]] | None) -> Any:
    """SUBMIT with one parameter per output field (``output`` when there are none), so a
    wrong call fails with Python's own message ("missing 1 required positional argument")."""
    names = [str(field["name"]) for field in outputs] if outputs else ["output"]
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        raise ValueError(f"output field names must be Python identifiers: {names}")
    fields = ", ".join(f"{name!r}: {name}" for name in names)
    namespace: dict[str, Any] = {"_Submitted": _Submitted}
    exec(f"def SUBMIT({', '.join(names)}):\n    raise _Submitted({{{fields}}})\n", namespace)
    return namespace["SUBMIT"]


def _code_traceback(error: BaseException) -> str:
    """The traceback over the code's own frames (the guest's and Pyodide's left out)."""
    summary = traceback.TracebackException.from_exception(error)
    pending, seen = [summary], set()
    while pending:  # the chained exceptions (raised while handling, or from) too
        part = pending.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        part.stack = traceback.StackSummary.from_list(
            [frame for frame in part.stack if frame.filename == CODE_FILENAME]
        )
        pending.extend(p for p in (part.__cause__, part.__context__) if p is not None)
    return "".join(summary.format())


def _set_variables(variables_path: str) -> None:
    if not variables_path:
        return
    with open(variables_path, "rb") as file:
        variables = json.loads(file.read())
    os.remove(variables_path)
    session_globals.update(variables)


async def run(code: str, variables_path: str, outcome_path: str, tools_json: str, outputs_json: str) -> None:
    """Run ``code``; write the outcome, as JSON, to ``outcome_path`` (a file in Pyodide's
    memory, which the runner sends to the host as bytes)."""
    try:
        outcome = await _outcome(code, variables_path, tools_json, outputs_json)
    except BaseException as error:  # before or after the code ran: the variables, the result
        hint = " (raise memory_limit_mb for larger values)" if isinstance(error, MemoryError) else ""
        outcome = json.dumps(
            {
                "kind": "error",
                "error_type": type(error).__name__,
                "message": f"{error}{hint}",
                "traceback": f"{type(error).__name__}: passing values in or out of the sandbox failed{hint}\n",
            }
        )
    with open(outcome_path, "w", encoding="utf-8") as file:
        file.write(outcome)


async def _outcome(code: str, variables_path: str, tools_json: str, outputs_json: str) -> str:
    from pyodide.code import eval_code_async

    for name in json.loads(tools_json):
        session_globals[name] = _make_tool(name)
    session_globals["SUBMIT"] = _make_submit(json.loads(outputs_json))
    _set_variables(variables_path)

    stdout, stderr = io.StringIO(), io.StringIO()
    outcome: dict[str, Any]
    try:
        # Parsed first so a syntax error is told apart from an error while running.
        ast.parse(code, CODE_FILENAME)
    except SyntaxError as error:
        return json.dumps(
            {
                "kind": "syntax_error",
                "error_type": type(error).__name__,
                "message": str(error.msg),
                "lineno": error.lineno,
                "traceback": "".join(traceback.format_exception_only(error)),
            }
        )
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            value = await eval_code_async(code, session_globals, filename=CODE_FILENAME)
        outcome = {"kind": "ok", "value": value}
    except _Submitted as submitted:
        outcome = {"kind": "final", "value": submitted.args[0]}
    except BaseException as error:  # SystemExit, KeyboardInterrupt too: the session goes on
        outcome = {
            "kind": "error",
            "error_type": type(error).__name__,
            "message": str(error),
            "traceback": _code_traceback(error),
        }
    outcome["stdout"] = stdout.getvalue()
    outcome["stderr"] = stderr.getvalue()
    return _outcome_json(outcome)


__all__ = ["run", "session_globals", "to_json"]
