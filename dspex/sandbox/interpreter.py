"""`PythonInterpreter`: run untrusted Python (an LM's code) in a Deno + Pyodide sandbox.

The code runs in CPython compiled to WebAssembly inside a Deno process that may read
only Pyodide's own files (and the paths you opt into): no host files, no network, no
environment variables, no subprocesses. Host functions can be offered to the code as
tools; each call travels to the host and back as JSON.

State: an interpreter keeps the code's globals between executions, as DSPy's does, as
long as the same process serves them: always with ``pool_size=1`` (the default). With a
larger pool, concurrent executions run on different processes, each with its own
globals. A timeout or a crash replaces the process, and its globals are gone.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import keyword
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

from dspex.errors import (
    CodeExecutionError,
    CodeInterpreterError,
    CodeSyntaxError,
    SandboxInstallError,
)
from dspex.sandbox import install as sandbox_install
from dspex.sandbox.pool import ProcessPool
from dspex.sandbox.process import Mount, SandboxProcess
from dspex.sandbox.values import (
    ExecutionResult,
    FinalOutput,
    tool_result_json,
    variables_json,
)

GUEST_MOUNT_ROOT = "/sandbox"
MIN_MEMORY_MB = 48
ToolsArg = Mapping[str, Callable[..., Any]] | Iterable[Any] | None


@cache
def _guest_source() -> str:
    return sandbox_install.GUEST_PATH.read_text(encoding="utf-8")


def _tools_by_name(tools: ToolsArg) -> dict[str, Callable[..., Any]]:
    """Tools as {name: callable}: a dict as given, or callables named by their ``.name``
    (a `dspex.Tool`) or ``__name__`` (a function)."""
    if tools is None:
        return {}
    if isinstance(tools, Mapping):
        named = dict(tools)
    else:
        named = {}
        for tool in tools:
            name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
            if not isinstance(name, str):
                raise CodeInterpreterError(f"a tool needs a name (a .name or __name__): {tool!r:.100}")
            named[name] = tool
    for name, tool in named.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise CodeInterpreterError(f"tool names must be Python identifiers, got {name!r}")
        if not callable(tool):
            raise CodeInterpreterError(f"tool {name!r} is not callable: {tool!r:.100}")
    return named


def _mounts(paths: Iterable[os.PathLike[str] | str]) -> list[Mount]:
    mounts: dict[str, Mount] = {}
    for path in paths:
        host = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if not os.path.exists(host):
            raise CodeInterpreterError(f"enable_read_paths: {path!s} does not exist")
        if "," in host:
            raise CodeInterpreterError(f"enable_read_paths: {host} has a comma, which Deno's permission list cannot hold")
        guest = f"{GUEST_MOUNT_ROOT}/{os.path.basename(host.rstrip(os.sep))}"
        if guest in mounts and mounts[guest].host != host:
            raise CodeInterpreterError(
                f"enable_read_paths: {mounts[guest].host} and {host} would both appear as {guest}; "
                "paths are mounted by their base name, which must be unique"
            )
        mounts[guest] = Mount(host=host, guest=guest, is_dir=os.path.isdir(host))
    return list(mounts.values())


def _call_tool(tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
               loop: asyncio.AbstractEventLoop | None) -> Any:
    func = getattr(tool, "func", None)
    if args and callable(func) and not inspect.isroutine(tool):
        # A dspex.Tool takes keyword arguments only: name the positional ones.
        bound = inspect.signature(func).bind_partial(*args, **kwargs)
        result = tool(**bound.arguments)
    else:
        result = tool(*args, **kwargs)
    if not inspect.isawaitable(result):
        return result

    async def settle() -> Any:
        return await result

    if loop is not None and loop.is_running():
        # From aexecute: the caller's loop is free (it awaits this thread), so the tool
        # runs where its own resources (sessions, locks) live.
        return asyncio.run_coroutine_threadsafe(settle(), loop).result()
    from dspex.utils.aio import run_sync

    return run_sync(settle())


class PythonInterpreter:
    """A sandbox for running Python code (an LM's) safely, DSPy-shaped.

    ``interpreter.execute(code, variables)`` (or ``interpreter(code)``) returns the
    value of the code's last expression, or what it printed when it ends with a
    statement, or a `FinalOutput` when it called ``SUBMIT(...)``. The code's exception
    raises `CodeExecutionError` (a syntax error `CodeSyntaxError`, also a SyntaxError)
    carrying the traceback text; running past ``timeout`` seconds raises
    `InterpreterTimeoutError`. Values cross as JSON; a last value JSON cannot hold comes
    back as its ``repr()`` text.

    Args:
        tools: host functions the code may call by name: ``{"name": fn}``, or a list of
            `dspex.Tool` objects / named functions. Arguments and results are JSON; a
            tool that raises raises RuntimeError in the code ("ValueError: ...").
        enable_read_paths: host files or directories the code may read, copied in at
            ``/sandbox/<base name>`` when a process starts (a snapshot; the host's files
            are never written).
        timeout: seconds one execution may run (tool calls not counted).
        memory_limit_mb: the most memory the sandboxed Python may hold (its whole
            WebAssembly heap, across executions); past it the code gets MemoryError.
        pool_size: processes kept warm; executions beyond it in flight wait.
        output_fields: ``[{"name": ...}, ...]``, the fields ``SUBMIT`` takes.
        max_restarts, restart_window: more process crashes than ``max_restarts`` within
            ``restart_window`` seconds and the interpreter gives up
            (`InterpreterUnavailableError`).
        start_timeout: seconds a new process may take to be ready.
        auto_install: fetch Pyodide from the npm registry on first use when it is not in
            the cache (else `SandboxInstallError`; see ``dspex sandbox install``).
    """

    execution_instructions = (
        "Your code runs in a sandboxed CPython (Pyodide, WebAssembly): the standard library "
        "is there, but no third-party packages, subprocesses, network or host files. Globals "
        "persist from one execution to the next. The value of the last expression is returned "
        "(or what was printed when the code ends with a statement)."
    )

    def __init__(
        self,
        tools: ToolsArg = None,
        enable_read_paths: Iterable[os.PathLike[str] | str] | None = None,
        timeout: float = 10.0,
        memory_limit_mb: int = 1024,
        pool_size: int = 1,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        start_timeout: float = 60.0,
        auto_install: bool = True,
    ) -> None:
        if not timeout > 0:
            raise CodeInterpreterError(f"timeout must be > 0 seconds, got {timeout!r}")
        if memory_limit_mb < MIN_MEMORY_MB:
            raise CodeInterpreterError(
                f"memory_limit_mb must be at least {MIN_MEMORY_MB} (Python itself takes about 20 MB "
                f"in the sandbox), got {memory_limit_mb!r}"
            )
        if pool_size < 1:
            raise CodeInterpreterError(f"pool_size must be at least 1, got {pool_size!r}")
        self.tools: dict[str, Callable[..., Any]] = _tools_by_name(tools)
        self.enable_read_paths = [os.fspath(p) for p in enable_read_paths or []]
        self.output_fields = list(output_fields) if output_fields else None
        for output in self.output_fields or []:
            name = output.get("name") if isinstance(output, Mapping) else None
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise CodeInterpreterError(
                    f"output_fields entries are {{'name': <a Python identifier>, ...}}, got {output!r}"
                )
        self.timeout = float(timeout)
        self.memory_limit_mb = int(memory_limit_mb)
        self.pool_size = int(pool_size)
        self.max_restarts = max_restarts
        self.restart_window = float(restart_window)
        self.start_timeout = float(start_timeout)
        self.auto_install = auto_install
        self._mounts = _mounts(self.enable_read_paths)
        self._pool: ProcessPool | None = None
        self._owner_pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._in_tool = threading.local()

    # --- running code ----------------------------------------------------------------------

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code``; return its last value, printed text or `FinalOutput`."""
        return self.run(code, variables).output()

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return self.execute(code, variables)

    async def aexecute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """`execute` without blocking the event loop (async tools run on this loop)."""
        result = await asyncio.to_thread(self._run, code, variables, asyncio.get_running_loop())
        return result.output()

    def run(self, code: str, variables: dict[str, Any] | None = None) -> ExecutionResult:
        """Run ``code`` and return everything it produced (value, prints, the PID...)."""
        return self._run(code, variables, None)

    def _run(self, code: str, variables: dict[str, Any] | None,
             loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        if getattr(self._in_tool, "active", False):
            raise CodeInterpreterError(
                "PythonInterpreter cannot execute recursively from one of its own tools "
                "(the process is busy running the code that called the tool)"
            )
        if not isinstance(code, str):
            raise CodeInterpreterError(f"code must be a str, got {type(code).__name__}")
        request = {
            "code": code,
            "variables": variables_json(variables),
            "tools": sorted(self.tools),
            "outputs": self.output_fields,
        }
        started = time.monotonic()
        outcome, pid = self._ensure_pool().run(
            request, lambda name, payload: self._handle_tool(name, payload, loop), self.timeout
        )
        return self._result(outcome, pid, time.monotonic() - started)

    def _result(self, outcome: dict[str, Any], pid: int, seconds: float) -> ExecutionResult:
        kind = outcome.get("kind")
        if kind == "syntax_error":
            raise CodeSyntaxError(
                str(outcome.get("error_type", "SyntaxError")),
                str(outcome.get("message", "")),
                str(outcome.get("traceback", "")),
                outcome.get("lineno"),
            )
        if kind == "error":
            raise CodeExecutionError(
                str(outcome.get("error_type", "Exception")),
                str(outcome.get("message", "")),
                str(outcome.get("traceback", "")),
            )
        if kind not in ("ok", "final"):
            raise CodeInterpreterError(f"the sandbox sent an outcome of unknown kind: {outcome!r:.300}")
        value = outcome.get("value")
        return ExecutionResult(
            value=None if kind == "final" else value,
            stdout=str(outcome.get("stdout", "")),
            stderr=str(outcome.get("stderr", "")),
            pid=pid,
            seconds=seconds,
            final=FinalOutput(value) if kind == "final" else None,
        )

    def _handle_tool(self, name: str, payload: str, loop: asyncio.AbstractEventLoop | None) -> dict[str, Any]:
        tool = self.tools.get(name)
        if tool is None:
            return {"ok": False, "error_type": "ToolNotFoundError", "message": f"no tool named {name!r}"}
        try:
            call = json.loads(payload)
            args, kwargs = list(call.get("args", [])), dict(call.get("kwargs", {}))
        except (ValueError, AttributeError, TypeError) as exc:
            return {"ok": False, "error_type": "ToolArgumentError", "message": f"unreadable arguments: {exc}"}
        self._in_tool.active = True
        try:
            value = _call_tool(tool, args, kwargs, loop)
        except Exception as exc:  # the tool's failure goes back to the code that called it
            return {"ok": False, "error_type": type(exc).__name__, "message": str(exc)}
        finally:
            self._in_tool.active = False
        return {"ok": True, "value": tool_result_json(value)}

    # --- processes ---------------------------------------------------------------------------

    def _ensure_pool(self) -> ProcessPool:
        with self._pool_lock:
            if self._pool is not None and self._owner_pid != os.getpid():
                # A forked child: the processes (and their pipes) are the parent's. Leave
                # them to it and start this process's own.
                self._pool = None
            if self._pool is None:
                self._owner_pid = os.getpid()
                self._pool = ProcessPool(
                    self._start_process,
                    self.pool_size,
                    max_restarts=self.max_restarts,
                    max_seconds=self.restart_window,
                )
            return self._pool

    def _start_process(self) -> SandboxProcess:
        base = sandbox_install.sandbox_dir()
        if not sandbox_install.is_installed(base):
            if not self.auto_install:
                raise SandboxInstallError(
                    f"Pyodide {sandbox_install.PYODIDE_VERSION} is not installed in {base}; "
                    "run `dspex sandbox install` (or pass auto_install=True)"
                )
            sandbox_install.install(base)
        limits = sandbox_install.SandboxLimits(
            memory_limit_mb=self.memory_limit_mb,
            read_paths=tuple(m.host for m in self._mounts),
        )
        pyodide_dir = os.path.realpath(sandbox_install.pyodide_dir(base))
        init = {
            "op": "init",
            "guest": _guest_source(),
            "pyodide_dir": pyodide_dir,
            "mounts": [{"host": m.host, "guest": m.guest, "dir": m.is_dir} for m in self._mounts],
        }
        return SandboxProcess(
            sandbox_install.deno_command(limits, base),
            sandbox_install.deno_env(base),
            init,
            self.start_timeout,
        )

    def start(self) -> None:
        """Start the pool's processes now rather than on first use."""
        self._ensure_pool().warm()

    @property
    def pids(self) -> list[int]:
        """PIDs of the live sandbox processes (none before the first execution)."""
        return [] if self._pool is None else self._pool.pids()

    def shutdown(self) -> None:
        """Stop the processes. The interpreter cannot run code afterwards (its globals
        are gone); a pickled copy of it can."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPool(self._start_process, self.pool_size,
                                         max_restarts=self.max_restarts, max_seconds=self.restart_window)
            pool = self._pool
        pool.shutdown()

    def __enter__(self) -> PythonInterpreter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- pickling: configuration only --------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "tools": self.tools,
            "enable_read_paths": self.enable_read_paths,
            "timeout": self.timeout,
            "memory_limit_mb": self.memory_limit_mb,
            "pool_size": self.pool_size,
            "output_fields": self.output_fields,
            "max_restarts": self.max_restarts,
            "restart_window": self.restart_window,
            "start_timeout": self.start_timeout,
            "auto_install": self.auto_install,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A fresh interpreter in the receiving process: its pool starts on first use.
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"PythonInterpreter(tools={sorted(self.tools)}, pool_size={self.pool_size}, "
            f"timeout={self.timeout:g}, memory_limit_mb={self.memory_limit_mb})"
        )
