"""The Python sandbox: run untrusted code (an LM's) in Pyodide on Deno, with no host
files, network or environment, behind a supervised pool of warm processes.

- `interpreter`: the public `PythonInterpreter` (DSPy-shaped);
- `values`: what crosses the boundary (JSON) and what an execution returns;
- `pool` and `supervision`: the processes, and the pure policy that restarts them;
- `process`: one Deno process and the host's side of its JSON-lines protocol;
- `install`: where Deno and Pyodide come from (``dspex sandbox install``);
- `runner.js` and `guest.py`: the JavaScript and Python halves that run in the sandbox.
"""

from dspex.errors import (
    CodeExecutionError,
    CodeInterpreterError,
    CodeSyntaxError,
    InterpreterCrashedError,
    InterpreterTimeoutError,
    InterpreterUnavailableError,
    SandboxInstallError,
)
from dspex.sandbox.interpreter import PythonInterpreter
from dspex.sandbox.values import ExecutionResult, FinalOutput

__all__ = [
    "CodeExecutionError",
    "CodeInterpreterError",
    "CodeSyntaxError",
    "ExecutionResult",
    "FinalOutput",
    "InterpreterCrashedError",
    "InterpreterTimeoutError",
    "InterpreterUnavailableError",
    "PythonInterpreter",
    "SandboxInstallError",
]
