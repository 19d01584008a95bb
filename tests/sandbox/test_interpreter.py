"""`dspex.PythonInterpreter` against a real Deno + Pyodide sandbox."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from _sandbox import kill_and_wait, pid_alive, wait_until
from pydantic import BaseModel

import dspex
from dspex.errors import (
    CodeExecutionError,
    CodeInterpreterError,
    CodeSyntaxError,
    InterpreterCrashedError,
    InterpreterTimeoutError,
    InterpreterUnavailableError,
)
from dspex.sandbox import FinalOutput, PythonInterpreter, install

# --- results -------------------------------------------------------------------------------


def test_last_expression_is_the_result(shared_interpreter: PythonInterpreter) -> None:
    assert shared_interpreter.execute("1 + 2") == 3
    assert shared_interpreter("import math\nmath.sqrt(16)") == 4.0
    assert shared_interpreter("{'a': [1, (2, 3)], 'b': None}") == {"a": [1, [2, 3]], "b": None}


def test_printed_output_when_the_code_ends_with_a_statement(shared_interpreter: PythonInterpreter) -> None:
    assert shared_interpreter.execute("print('hello')\nprint(6 * 7)") == "hello\n42\n"
    assert shared_interpreter.execute("x_unused = 1") == ""
    result = shared_interpreter.run("print('out')\n5")
    assert (result.value, result.stdout) == (5, "out\n")


def test_values_json_cannot_hold_come_back_as_repr(shared_interpreter: PythonInterpreter) -> None:
    assert shared_interpreter.execute("object.__new__(type('Point', (), {'__repr__': lambda s: 'Point()'}))") == "Point()"
    assert shared_interpreter.execute("sorted({3, 1, 2})") == [1, 2, 3]
    assert shared_interpreter.execute("{(1, 2): 'tuple key'}") == "{(1, 2): 'tuple key'}"


def test_variables_in_and_results_out(shared_interpreter: PythonInterpreter) -> None:
    class Hit(BaseModel):
        doc: int
        title: str

    result = shared_interpreter.execute(
        "[n + 1, words[::-1], hit['doc'], sorted(tags), pair]",
        variables={"n": 41, "words": ["a", "b"], "hit": Hit(doc=7, title="t"), "tags": {"y", "x"}, "pair": (1, 2)},
    )
    assert result == [42, ["b", "a"], 7, ["x", "y"], [1, 2]]
    assert shared_interpreter.execute("import math\nmath.isinf(big)", variables={"big": float("inf")}) is True


def test_bad_variables_are_refused_before_running(shared_interpreter: PythonInterpreter) -> None:
    with pytest.raises(CodeInterpreterError, match="Invalid variable name"):
        shared_interpreter.execute("1", variables={"class": 1})
    with pytest.raises(CodeInterpreterError, match="Unsupported value type"):
        shared_interpreter.execute("1", variables={"thing": object()})


def test_globals_persist_between_executions(shared_interpreter: PythonInterpreter) -> None:
    shared_interpreter.execute("counter = 10\ndef bump():\n    global counter\n    counter += 1\n    return counter")
    assert shared_interpreter.execute("bump()") == 11
    assert shared_interpreter.execute("bump()") == 12


def test_submit_returns_a_final_output(shared_interpreter: PythonInterpreter) -> None:
    assert shared_interpreter.execute("SUBMIT([1, 'two'])\nprint('not reached')") == FinalOutput({"output": [1, "two"]})
    fielded = PythonInterpreter.__new__(PythonInterpreter)  # same process, other fields:
    fielded.__dict__.update(shared_interpreter.__dict__)
    fielded.output_fields = [{"name": "answer"}, {"name": "reason"}]
    assert fielded.execute("SUBMIT(42, reason='because')") == FinalOutput({"answer": 42, "reason": "because"})
    with pytest.raises(CodeExecutionError, match="missing 1 required positional argument: 'reason'"):
        fielded.execute("SUBMIT(answer=1)")
    with pytest.raises(CodeInterpreterError, match="output_fields"):
        PythonInterpreter(output_fields=[{"name": "not valid"}])


# --- errors --------------------------------------------------------------------------------


def test_syntax_error_is_typed_and_nothing_runs(shared_interpreter: PythonInterpreter) -> None:
    with pytest.raises(SyntaxError) as caught:
        shared_interpreter.execute("side_effect = 1\nx = (1 +\n")
    assert isinstance(caught.value, CodeSyntaxError)
    assert "Invalid Python syntax" in str(caught.value)
    assert caught.value.lineno is not None
    with pytest.raises(CodeExecutionError, match="NameError"):
        shared_interpreter.execute("side_effect")


def test_runtime_error_carries_the_codes_traceback(shared_interpreter: PythonInterpreter) -> None:
    code = "def divide(a, b):\n    return a / b\n\ndivide(1, 0)\n"
    with pytest.raises(CodeExecutionError) as caught:
        shared_interpreter.execute(code)
    error = caught.value
    assert error.error_type == "ZeroDivisionError"
    assert 'File "<code>", line 4' in error.traceback_text
    assert 'File "<code>", line 2, in divide' in error.traceback_text
    assert "_pyodide" not in error.traceback_text and "dspex-guest" not in error.traceback_text
    assert str(error).endswith("ZeroDivisionError: division by zero")
    assert pickle.loads(pickle.dumps(error)).traceback_text == error.traceback_text
    # The process is fine afterwards, and so are the globals.
    assert shared_interpreter.execute("2 * 21") == 42


def test_a_class_named_like_dspexs_errors_is_still_the_codes_error(shared_interpreter: PythonInterpreter) -> None:
    with pytest.raises(CodeExecutionError, match="InterpreterTimeoutError"):
        shared_interpreter.execute("class InterpreterTimeoutError(Exception): pass\nraise InterpreterTimeoutError('fake')")


def test_system_exit_does_not_end_the_session(shared_interpreter: PythonInterpreter) -> None:
    with pytest.raises(CodeExecutionError, match="SystemExit"):
        shared_interpreter.execute("import sys\nsys.exit(3)")
    assert shared_interpreter.execute("'still here'") == "still here"


# --- isolation -----------------------------------------------------------------------------


def _error_text(interpreter: PythonInterpreter, code: str) -> str:
    with pytest.raises(CodeExecutionError) as caught:
        interpreter.execute(code)
    return str(caught.value)


def test_host_files_cannot_be_read(shared_interpreter: PythonInterpreter, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's secret")
    for path in ("/etc/passwd", str(secret)):
        # Python's open() sees Pyodide's in-memory filesystem, where the host's files are not.
        assert "No such file" in _error_text(shared_interpreter, f"open({path!r}).read()")
        # Deno's own API refuses: the process may read nothing of the host's.
        message = _error_text(shared_interpreter, f"import js\njs.Deno.readTextFileSync({path!r})")
        assert "Requires read access" in message and "the host's secret" not in message
    # Not even Pyodide's own files in the cache (read access is dropped once it loaded).
    for own_file in (install.pyodide_dir(), install.snapshot_path()):
        assert "Requires read access" in _error_text(
            shared_interpreter, f"import js\njs.Deno.statSync({str(own_file)!r})"
        )
    assert "Requires write access" in _error_text(
        shared_interpreter, f"import js\njs.Deno.writeTextFileSync({str(tmp_path / 'w.txt')!r}, 'x')"
    )
    assert not (tmp_path / "w.txt").exists()


def test_no_network(shared_interpreter: PythonInterpreter) -> None:
    assert "OSError" in _error_text(
        shared_interpreter, "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))"
    )
    assert "Error" in _error_text(
        shared_interpreter, "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/').read()"
    )
    assert "Requires net access" in _error_text(
        shared_interpreter, "import js\nawait js.fetch('https://registry.npmjs.org/')"
    )
    assert "Requires net access" in _error_text(
        shared_interpreter, "from pyodide.http import pyfetch\nawait pyfetch('https://registry.npmjs.org/')"
    )


def test_no_environment_and_no_subprocesses(shared_interpreter: PythonInterpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "Requires env access" in _error_text(shared_interpreter, "import js\njs.Deno.env.toObject()")
    assert "Requires run access" in _error_text(
        shared_interpreter, "import js\njs.Deno.Command.new('/bin/sh').outputSync()"
    )
    # The process was started with an environment of its own: none of the caller's variables.
    assert "OPENAI_API_KEY" not in shared_interpreter.execute("import os\nlist(os.environ)")


def test_processes_start_offline_with_nothing_granted_but_pyodide(sandbox_dir: Path) -> None:
    command = install.deno_command(install.SandboxLimits(read_paths=("/data/x",)), sandbox_dir)
    assert "--cached-only" in command and "--no-prompt" in command
    assert not any(flag.startswith(("--allow-net", "--allow-env", "--allow-run", "--allow-write",
                                    "--allow-ffi", "--allow-sys", "--allow-all", "-A")) for flag in command)
    allowed = next(flag for flag in command if flag.startswith("--allow-read="))
    assert allowed.split("=", 1)[1].split(",") == [
        str(install.pyodide_dir(sandbox_dir)), str(install.snapshot_path(sandbox_dir)), "/data/x"
    ]
    assert set(install.deno_env(sandbox_dir)) == {"DENO_DIR", "DENO_NO_UPDATE_CHECK", "DENO_NO_PACKAGE_JSON", "NO_COLOR"}


def test_opted_in_paths_are_readable_as_a_copy(sandbox_dir: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("opted in")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "rows.csv").write_text("a,b\n1,2\n")
    with PythonInterpreter(enable_read_paths=[notes, str(data)]) as interpreter:
        assert interpreter.execute("open('/sandbox/notes.txt').read()") == "opted in"
        assert interpreter.execute("open('/sandbox/data/sub/rows.csv').read()") == "a,b\n1,2\n"
        # Writing changes the sandbox's copy only.
        interpreter.execute("open('/sandbox/notes.txt', 'w').write('changed')")
        assert notes.read_text() == "opted in"
        assert "Requires read access" in _error_text(interpreter, "import js\njs.Deno.readTextFileSync('/etc/passwd')")


def test_read_paths_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(CodeInterpreterError, match="does not exist"):
        PythonInterpreter(enable_read_paths=[tmp_path / "missing"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.txt").write_text("1")
    (tmp_path / "b" / "same.txt").write_text("2")
    with pytest.raises(CodeInterpreterError, match="unique"):
        PythonInterpreter(enable_read_paths=[tmp_path / "a" / "same.txt", tmp_path / "b" / "same.txt"])


def test_memory_limit_raises_memory_error_in_the_code(sandbox_dir: Path) -> None:
    with PythonInterpreter(memory_limit_mb=96) as interpreter:
        with pytest.raises(CodeExecutionError) as caught:
            interpreter.execute("block = bytearray(200 * 1024 * 1024)")
        assert caught.value.error_type == "MemoryError"
        assert interpreter.execute("len(bytearray(8 * 1024 * 1024))") == 8 * 1024 * 1024
        # Values passed in count too, and fail the same way (not as a sandbox failure).
        with pytest.raises(CodeExecutionError, match="memory_limit_mb"):
            interpreter.execute("len(big)", {"big": "x" * (120 * 1024 * 1024)})
        assert interpreter.execute("'alive'") == "alive"


def test_large_values_cross_as_bytes(shared_interpreter: PythonInterpreter) -> None:
    big = "é" * (30 * 1024 * 1024)  # far past the JavaScript heap's cap, which it never enters
    assert shared_interpreter.execute("len(big)", {"big": big}) == len(big)
    assert shared_interpreter.execute("big[:3] + str(len(big))") == "ééé" + str(len(big))
    assert len(shared_interpreter.execute("big * 2")) == 2 * len(big)
    shared_interpreter.execute("del big")


# --- tools ---------------------------------------------------------------------------------


def test_tools_are_called_on_the_host(shared_interpreter: PythonInterpreter) -> None:
    calls: list[tuple[Any, ...]] = []

    def search(query: str, limit: int = 2) -> list[str]:
        calls.append((query, limit))
        return [f"{query}-{i}" for i in range(limit)]

    async def double(x: float) -> float:
        await asyncio.sleep(0)
        return x * 2

    shared_interpreter.tools.update({"search": search, "double": double})
    try:
        assert shared_interpreter.execute("search('cats', limit=3)") == ["cats-0", "cats-1", "cats-2"]
        assert shared_interpreter.execute("search('dogs')") == ["dogs-0", "dogs-1"]
        assert shared_interpreter.execute("double(2.5) + double(x=1)") == 7.0
        assert calls == [("cats", 3), ("dogs", 2)]
    finally:
        shared_interpreter.tools.clear()


def test_a_tool_that_raises_raises_inside_the_sandbox(shared_interpreter: PythonInterpreter) -> None:
    def lookup(key: str) -> str:
        raise KeyError(f"no entry {key}")

    shared_interpreter.tools["lookup"] = lookup
    try:
        code = "try:\n    lookup('k1')\nexcept RuntimeError as error:\n    caught = str(error)\ncaught"
        assert shared_interpreter.execute(code) == "KeyError: 'no entry k1'"
        with pytest.raises(CodeExecutionError, match="KeyError"):
            shared_interpreter.execute("lookup('k2')")
    finally:
        shared_interpreter.tools.clear()


def test_dspex_tools_and_positional_arguments(shared_interpreter: PythonInterpreter) -> None:
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    assert list(PythonInterpreter(tools=[dspex.Tool(add)]).tools) == ["add"]
    shared_interpreter.tools.update(PythonInterpreter(tools=[dspex.Tool(add)]).tools)
    try:
        assert shared_interpreter.execute("add(2, b=3) + add(a=1, b=1)") == 7
        with pytest.raises(CodeExecutionError, match="ToolArgumentError"):
            shared_interpreter.execute("add(a='x', b=1)")
    finally:
        shared_interpreter.tools.clear()


def test_a_tool_cannot_reenter_its_interpreter(shared_interpreter: PythonInterpreter) -> None:
    shared_interpreter.tools["again"] = lambda: shared_interpreter.execute("1")
    try:
        with pytest.raises(CodeExecutionError, match="recursively"):
            shared_interpreter.execute("again()")
        assert shared_interpreter.execute("3") == 3
    finally:
        shared_interpreter.tools.clear()


def test_aexecute(shared_interpreter: PythonInterpreter) -> None:
    async def main() -> list[Any]:
        return [await shared_interpreter.aexecute("n * 2", {"n": 21}), await shared_interpreter.aexecute("print('x')")]

    assert asyncio.run(main()) == [42, "x\n"]


# --- supervision ---------------------------------------------------------------------------


def test_the_same_process_serves_consecutive_executions(shared_interpreter: PythonInterpreter) -> None:
    pids = {shared_interpreter.run(f"{i} + 1").pid for i in range(5)}
    assert len(pids) == 1
    assert shared_interpreter.pids == list(pids)


def test_an_endless_loop_is_stopped_and_the_next_execution_works(shared_interpreter: PythonInterpreter) -> None:
    first_pid = shared_interpreter.run("kept = 1").pid
    shared_interpreter.timeout = 1.0
    try:
        with pytest.raises(InterpreterTimeoutError) as caught:
            shared_interpreter.execute("while True:\n    pass")
    finally:
        shared_interpreter.timeout = 20.0
    assert isinstance(caught.value, TimeoutError)
    wait_until(lambda: not pid_alive(first_pid), what="the hung process to be killed")
    result = shared_interpreter.run("'kept' in globals()")
    assert result.value is False  # a new process: the old globals went with the old one
    assert result.pid != first_pid


def test_a_killed_process_is_replaced(shared_interpreter: PythonInterpreter) -> None:
    pid = shared_interpreter.run("1").pid
    kill_and_wait(shared_interpreter, pid)
    result = shared_interpreter.run("40 + 2")
    assert result.value == 42 and result.pid != pid


def test_a_process_dying_mid_execution_raises_and_is_replaced(shared_interpreter: PythonInterpreter) -> None:
    pid = shared_interpreter.run("1").pid
    # The code's process is killed while it runs (SIGKILL from a host tool, as the OOM
    # killer would).
    shared_interpreter.tools["die"] = lambda: os.kill(pid, signal.SIGKILL)
    try:
        with pytest.raises(InterpreterCrashedError, match="signal 9"):
            shared_interpreter.execute("die()")
    finally:
        shared_interpreter.tools.clear()
    assert shared_interpreter.run("'back'").value == "back"


def test_restart_intensity_gives_up(sandbox_dir: Path) -> None:
    with PythonInterpreter(max_restarts=0, restart_window=600) as interpreter:
        pid = interpreter.run("1").pid
        kill_and_wait(interpreter, pid)
        with pytest.raises(InterpreterUnavailableError, match="gave up after 1 sandbox restarts"):
            interpreter.execute("1")


def test_shutdown_stops_the_processes_and_ends_the_interpreter(sandbox_dir: Path) -> None:
    interpreter = PythonInterpreter()
    pid = interpreter.run("1").pid
    interpreter.shutdown()
    wait_until(lambda: not pid_alive(pid), what="the process to stop")
    with pytest.raises(InterpreterUnavailableError, match="shut down"):
        interpreter.execute("1")


def test_processes_do_not_outlive_the_python_process(sandbox_dir: Path) -> None:
    script = textwrap.dedent(
        """
        from dspex.sandbox import PythonInterpreter
        interpreter = PythonInterpreter()
        print(interpreter.run("1").pid, flush=True)
        kept_forever = interpreter  # no shutdown: the exit must stop it
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    pid = int(done.stdout.split()[0])
    wait_until(lambda: not pid_alive(pid), what="the orphan to be stopped")


def test_a_host_killed_mid_execution_takes_its_sandbox_along(sandbox_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, threading
        from dspex.sandbox import PythonInterpreter
        running = threading.Event()
        interpreter = PythonInterpreter(tools={"running": running.set}, timeout=600)
        print(interpreter.run("1").pid, flush=True)
        threading.Thread(target=interpreter.execute, args=("running()\\nwhile True: pass",)).start()
        running.wait(60)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no finalizer: the kernel's signal
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(done.stdout.split()[0])
    wait_until(lambda: not pid_alive(pid), what="the spinning sandbox to die with its host")


def test_pickling_keeps_configuration_and_starts_fresh(shared_interpreter: PythonInterpreter) -> None:
    shared_interpreter.execute("secret_state = 1")
    copy = pickle.loads(pickle.dumps(shared_interpreter))
    assert (copy.timeout, copy.memory_limit_mb, copy.pool_size) == (20.0, 1024, 1)
    assert copy.pids == []  # nothing started until it runs code
    try:
        assert copy.execute("'secret_state' in globals()") is False
        assert copy.pids != shared_interpreter.pids
    finally:
        copy.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_sandbox(shared_interpreter: PythonInterpreter) -> None:
    parent_pid = shared_interpreter.run("forked_marker = 1").pid
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: must not talk to the parent's sandbox process
        try:
            result = shared_interpreter.run("'forked_marker' in globals()")
            os.write(write, f"{result.value},{result.pid}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(child, 0)
    seen, child_sandbox = answer.split(",")
    assert seen == "False" and int(child_sandbox) != parent_pid
    assert shared_interpreter.run("forked_marker").pid == parent_pid


def test_a_pool_runs_executions_side_by_side(sandbox_dir: Path) -> None:
    with PythonInterpreter(pool_size=2, timeout=30) as interpreter:
        interpreter.start()
        assert len(interpreter.pids) == 2

        async def both() -> list[Any]:
            # Each waits on a host tool until the other is running too: only two processes
            # working at once can finish.
            return await asyncio.gather(
                interpreter.aexecute("wait_for_other()\n1"), interpreter.aexecute("wait_for_other()\n2")
            )

        barrier = threading.Barrier(2, timeout=20)
        interpreter.tools["wait_for_other"] = lambda: barrier.wait() is not None
        assert sorted(asyncio.run(both())) == [1, 2]
