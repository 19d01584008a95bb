"""One sandbox process: a Deno subprocess running ``runner.js``, and the host's side of
its JSON-lines protocol (the message shapes are described at the top of runner.js).

`SandboxProcess` owns the subprocess and two reader threads (stdout lines into a queue,
stderr into a short tail kept for error messages). It knows nothing of pools or restarts:
a call either returns the guest's outcome or raises `InterpreterTimeoutError` (the
process is left running: the pool kills it) or `InterpreterCrashedError` (it is gone),
and the pool decides what happens next.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dspex.errors import CodeInterpreterError, InterpreterCrashedError, InterpreterTimeoutError

# (tool name, JSON payload {"args": [...], "kwargs": {...}}) -> tool_result fields
ToolHandler = Callable[[str, str], dict[str, Any]]

class _RequestNotDelivered(Exception):
    """The process was already dead when a request was written: nothing of it ran, so
    the pool may run it on a new process. (Internal; never reaches a caller.)"""


_EOF = object()  # the reader thread's marker: stdout closed, the process is gone
STDERR_TAIL_LINES = 40


@dataclass(frozen=True)
class Mount:
    """A host path made readable inside the sandbox at ``guest``: copied in (a directory
    with everything under it, symlinks left out) when the process starts."""

    host: str
    guest: str
    is_dir: bool


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL this process when the thread that started it
    dies (Linux). The host being killed (a Ray worker, kill -9) then takes its sandboxes
    with it, even one spinning in an endless loop that never reads its closed stdin."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Launcher:
    """Starts every sandbox process from one thread that lives as long as the host
    process: the parent-death signal follows the starting *thread*, so a process started
    from a short-lived thread (a thread pool's) would be killed when that thread ends."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], dict[str, str], concurrent.futures.Future[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def launch(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="dspex-sandbox-launcher", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._requests.put((command, env, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            command, env, future = self._requests.get()
            try:
                future.set_result(_popen(command, env, _die_with_parent))
            except BaseException as exc:
                future.set_exception(exc)


def _popen(command: list[str], env: dict[str, str], preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",  # nothing of the caller's working directory is looked at
        close_fds=True,
        preexec_fn=preexec,  # only prctl, and from one dedicated thread
    )


_launcher = _Launcher()


def _new_launcher_after_fork() -> None:
    # A forked child has none of its parent's threads, and the queue may still name the
    # parent's waiting launcher: the child gets a launcher of its own.
    global _launcher
    _launcher = _Launcher()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_launcher_after_fork)


def _launch(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    if sys.platform.startswith("linux"):
        return _launcher.launch(command, env)
    return _popen(command, env, None)


class SandboxProcess:
    """A started Deno + Pyodide process, ready once `__init__` returns."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        init_message: dict[str, Any],
        start_timeout: float,
    ) -> None:
        self.started_at = time.monotonic()
        self._popen = _launch(command, env)
        self.pid = self._popen.pid
        self._messages: queue.Queue[object] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._write_lock = threading.Lock()
        self._next_id = 0
        threading.Thread(target=self._read_stdout, name=f"dspex-sandbox-{self.pid}-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name=f"dspex-sandbox-{self.pid}-err", daemon=True).start()
        try:
            self._send(init_message)
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    message = self._next_message(deadline, start_timeout)
                except InterpreterTimeoutError:
                    raise InterpreterCrashedError(
                        f"a new sandbox process was not ready within {start_timeout:g}s "
                        f"({self.describe_exit()})"
                    ) from None
                if message.get("op") == "ready":
                    break
            self.ready_seconds = time.monotonic() - self.started_at
        except BaseException:
            self.kill()
            raise

    # --- state -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    def describe_exit(self) -> str:
        """The exit code (a negative one is the signal) and the end of stderr."""
        code = self._popen.poll()
        how = "still running" if code is None else (
            f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        )
        tail = "\n".join(self._stderr_tail).strip()
        return f"{how}; stderr: {tail[-1500:]}" if tail else how

    # --- one execution -------------------------------------------------------------------

    def execute(
        self,
        request: dict[str, Any],
        tool_handler: ToolHandler,
        timeout: float,
    ) -> dict[str, Any]:
        """Send one execute request and return the guest's outcome. Time spent in host
        tools does not count against ``timeout``: it bounds the sandboxed code's own run."""
        self._next_id += 1
        execution_id = self._next_id
        variables = request.get("variables") or "{}"
        header = {key: value for key, value in request.items() if key != "variables"}
        blob = None if variables == "{}" else variables.encode()
        try:
            self._send({"op": "execute", "id": execution_id, **header}, blob)
        except InterpreterCrashedError as exc:
            raise _RequestNotDelivered(exc.detail) from exc
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message(deadline, timeout)
            op = message.get("op")
            if op == "tool_call" and message.get("id") == execution_id:
                tool_started = time.monotonic()
                reply = tool_handler(str(message.get("name")), str(message.get("payload")))
                self._send({"op": "tool_result", "call": message.get("call"), **reply})
                deadline += time.monotonic() - tool_started
            elif op == "done" and message.get("id") == execution_id:
                try:
                    outcome = json.loads(message["blob"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise CodeInterpreterError(f"the sandbox sent a malformed outcome: {message!r:.300}") from exc
                if not isinstance(outcome, dict):
                    raise CodeInterpreterError(f"the sandbox sent a malformed outcome: {outcome!r:.300}")
                return outcome
            # Anything else (a line the code printed straight to the process's stdout,
            # a stale message) is not an answer to this request: skip it.

    # --- stopping --------------------------------------------------------------------------

    def close(self, grace: float = 2.0) -> None:
        """Ask the runner to exit (stdin closed), then kill it if it has not within ``grace``."""
        if self.alive:
            try:
                assert self._popen.stdin is not None
                self._popen.stdin.close()
                self._popen.wait(timeout=grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        if self._popen.poll() is None:
            with contextlib.suppress(OSError):
                self._popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=10)
        for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    # --- plumbing ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any], blob: bytes | None = None) -> None:
        """One message line; with ``blob``, its length in the line and the bytes after it."""
        if blob is not None:
            message = {**message, "blob": len(blob)}
        data = (json.dumps(message, allow_nan=True) + "\n").encode()
        with self._write_lock:
            try:
                assert self._popen.stdin is not None
                self._popen.stdin.write(data)
                if blob:
                    self._popen.stdin.write(blob)
                self._popen.stdin.flush()
            except (OSError, ValueError) as exc:  # a broken pipe or a closed stream
                raise InterpreterCrashedError(self.describe_exit()) from exc

    def _next_message(self, deadline: float, timeout: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InterpreterTimeoutError(timeout)
        try:
            item = self._messages.get(timeout=remaining)
        except queue.Empty:
            raise InterpreterTimeoutError(timeout) from None
        if item is _EOF:
            self._messages.put(_EOF)  # later calls see it too
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=5)
            raise InterpreterCrashedError(self.describe_exit())
        return item  # type: ignore[return-value]

    def _read_stdout(self) -> None:
        """Messages off stdout into the queue: each line that is a JSON object, with the
        raw bytes that follow it when it announces a blob. Other lines are skipped (text
        the code wrote straight to the process's stdout)."""
        stream = self._popen.stdout
        assert stream is not None
        try:
            while True:
                line = stream.readline()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                size = message.get("blob")
                if isinstance(size, int) and size >= 0:
                    blob = stream.read(size)
                    if len(blob) < size:
                        break
                    message["blob"] = blob
                self._messages.put(message)
        except (OSError, ValueError):
            pass
        self._messages.put(_EOF)

    def _read_stderr(self) -> None:
        stream = self._popen.stderr
        assert stream is not None
        try:
            for raw in stream:
                self._stderr_tail.append(raw.decode(errors="replace").rstrip())
        except (OSError, ValueError):
            pass
