"""The simulated LM in its own process (`python -m dspex.simlm`).

A separate process keeps the server's CPU off the caller's event loop, which
matters for benchmarks and for Ray actors calling it from other processes.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from dspex.simlm.faults import FaultConfig
from dspex.simlm.server import check_loopback

_POLL_SECONDS = 0.02


class SimLMProcess:
    """A running simulated LM subprocess; `stop()` terminates it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        host: str,
        port: int,
        workdir: tempfile.TemporaryDirectory[str],
    ) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self._workdir = workdir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/stats")

    def set_faults(
        self, faults: FaultConfig | Mapping[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        config = faults if faults is not None else fields
        payload = config.model_dump() if isinstance(config, FaultConfig) else dict(config)
        return self._request("POST", "/admin/faults", payload)

    def set_stream(self, *, chunk_chars: int = 0, chunk_delay_ms: float = 0.0) -> dict[str, Any]:
        """How streamed answers are chunked (0: before each word) and paced."""
        return self._request("POST", "/admin/stream", {"chunk_chars": chunk_chars, "chunk_delay_ms": chunk_delay_ms})

    def reset_stats(self) -> None:
        self._request("POST", "/admin/reset", {})

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout`); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._workdir.cleanup()
        return self.proc.returncode

    def __enter__(self) -> SimLMProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, payload: Any = None, timeout: float = 10.0) -> Any:
        # http.client, not urllib: urllib may route even 127.0.0.1 through a proxy from the environment.
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            body = None if payload is None else json.dumps(payload)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = json.loads(response.read() or b"null")
            if response.status >= 400:
                raise RuntimeError(
                    f"simulated LM answered {response.status} to {method} {path}: {data}"
                )
            return data
        finally:
            conn.close()


def spawn_sim_lm(
    *,
    port: int = 0,
    seed: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    faults: FaultConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    startup_timeout: float = 30.0,
) -> SimLMProcess:
    """Start `python -m dspex.simlm` and wait (up to `startup_timeout`)
    until `GET /v1/models` answers. Its stdout is discarded; errors go to stderr."""
    check_loopback(host)
    workdir = tempfile.TemporaryDirectory(prefix="dspex-simlm-")
    port_file = Path(workdir.name) / "port"
    config = (
        faults
        if isinstance(faults, FaultConfig)
        else FaultConfig.model_validate(dict(faults or {}))
    )
    cmd = [
        sys.executable,
        "-m",
        "dspex.simlm",
        "--host",
        host,
        "--port",
        str(port),
        "--seed",
        str(seed),
        "--latency-ms",
        str(latency_ms),
        "--jitter-ms",
        str(jitter_ms),
        "--faults-json",
        config.model_dump_json(),
        "--port-file",
        str(port_file),
    ]
    env = dict(os.environ)
    if api_key is not None:
        env["DSPEX_SIMLM_API_KEY"] = api_key  # not on the command line, where `ps` shows it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    try:
        bound = _wait_ready(proc, host, port_file, time.monotonic() + startup_timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        workdir.cleanup()
        raise
    return SimLMProcess(proc, host, bound, workdir)


def _wait_ready(proc: subprocess.Popen[bytes], host: str, port_file: Path, deadline: float) -> int:
    bound: int | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"simulated LM exited with code {proc.returncode} before it was ready (see stderr)"
            )
        if bound is None and port_file.exists():
            bound = int(port_file.read_text(encoding="utf-8"))
        if bound is not None and _answers(host, bound):
            return bound
        time.sleep(_POLL_SECONDS)  # polling a child process; there is nothing to await
    raise TimeoutError("simulated LM did not answer GET /v1/models in time")


def _answers(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        return True  # any HTTP answer (even 503 during an outage) means it is serving
    except OSError:
        return False
    finally:
        conn.close()
