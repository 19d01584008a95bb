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
        return json.dumps(value, default=_fallback, allow_nan=True)
    except (TypeError, ValueError):
        # Keys that are not str/int/float/bool/None, or a cycle: the repr is all we can say.
        return json.dumps(repr(value))


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
    names = [field["name"] for field in outputs] if outputs else ["output"]

    def SUBMIT(*args: Any, **kwargs: Any) -> None:  # the name the code calls
        if len(args) > len(names):
            raise TypeError(f"SUBMIT takes {len(names)} values ({', '.join(names)}), got {len(args)}")
        answer = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"SUBMIT got an unexpected field {key!r}; it takes {', '.join(names)}")
            if key in answer:
                raise TypeError(f"SUBMIT got two values for {key!r}")
            answer[key] = value
        missing = [n for n in names if n not in answer]
        if missing:
            raise TypeError(f"SUBMIT is missing {', '.join(missing)}")
        raise _Submitted(answer)

    return SUBMIT


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


def _set_variables(variables_json: str) -> None:
    variables = json.loads(variables_json)
    session_globals.update(variables)


async def run(code: str, variables_json: str, tools_json: str, outputs_json: str) -> str:
    from pyodide.code import eval_code_async

    for name in json.loads(tools_json):
        session_globals[name] = _make_tool(name)
    session_globals["SUBMIT"] = _make_submit(json.loads(outputs_json))
    _set_variables(variables_json)

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
        outcome = {"kind": "ok", "value": None if value is None else to_json(value)}
    except _Submitted as submitted:
        outcome = {"kind": "final", "value": to_json(submitted.args[0])}
    except BaseException as error:  # SystemExit, KeyboardInterrupt too: the session goes on
        outcome = {
            "kind": "error",
            "error_type": type(error).__name__,
            "message": str(error),
            "traceback": _code_traceback(error),
        }
    outcome["stdout"] = stdout.getvalue()
    outcome["stderr"] = stderr.getvalue()
    return json.dumps(outcome)


__all__ = ["run", "session_globals", "to_json"]
