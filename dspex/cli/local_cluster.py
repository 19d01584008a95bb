"""A local multi-node Ray cluster started with Ray's own ``ray start``.

Each node is one ``ray start --block`` process in its own session (process
group): it owns the node's daemons (GCS, raylet, dashboard, agents) and tears
them down on SIGTERM, so stopping a node is signalling one process we started.
Every node gets its own Ray temp dir under one unique base directory; every Ray
process names that directory on its command line, which lets ``stop`` find
exactly our processes and no other engineer's. What was started is written to
a state file so a later ``dspex cluster stop`` can undo it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dspex.cli.cluster_access import find_token
from dspex.cli.common import ExitCode
from dspex.errors import CliError
from dspex.runtime.auth_token import AUTH_MODE_ENV

LOOPBACK = "127.0.0.1"
STATE_FILE = "cluster.json"
READY_MARK = "Ray runtime started"
# Ray puts Unix sockets under <temp dir>/session_<date>/sockets/; Linux caps a
# socket path at 107 bytes, so the temp root must stay short.
_MAX_BASE_LEN = 32

Progress = Callable[[str], None]


def state_dir() -> Path:
    """Where `dspex cluster` keeps its state file (DSPEX_STATE_DIR overrides)."""
    explicit = os.environ.get("DSPEX_STATE_DIR")
    if explicit:
        return Path(explicit)
    import platformdirs

    # The runtime dir is per user and emptied at logout/reboot, like the
    # processes it describes; without XDG_RUNTIME_DIR fall back to the cache dir.
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(platformdirs.user_runtime_dir("dspex"))
    return Path(platformdirs.user_cache_dir("dspex")) / "cluster"


@dataclass
class NodeProcess:
    """One `ray start --block` process: a node of the cluster."""

    name: str
    pid: int
    temp_dir: str
    log: str
    ports: dict[str, int] = field(default_factory=dict)


@dataclass
class ClusterState:
    """What `dspex cluster start` started, as written to the state file."""

    base_dir: str
    gcs_address: str
    dashboard_url: str | None
    client_address: str
    auth_mode: str
    token_origin: str | None
    nodes: list[NodeProcess] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def head(self) -> NodeProcess:
        return self.nodes[0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterState:
        nodes = [NodeProcess(**node) for node in data.get("nodes", [])]
        return cls(**{**data, "nodes": nodes})


def load_state(directory: Path | None = None) -> ClusterState | None:
    path = (directory or state_dir()) / STATE_FILE
    try:
        return ClusterState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise CliError(
            f"the cluster state file {path} is damaged ({exc}); delete it and stop any leftover Ray processes by PID",
            ExitCode.FAILED,
        ) from exc


def save_state(state: ClusterState, directory: Path | None = None) -> Path:
    directory = directory or state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    # Write then rename, so a reader never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def clear_state(directory: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        ((directory or state_dir()) / STATE_FILE).unlink()


# --- processes ---------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped) does not count.

    We do not reap here: the parent (maybe a test) may want the exit status.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _ps_state(pid).startswith("Z")
    except OSError:
        return False
    # The command name in parentheses may contain spaces; the state follows it.
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _ps_state(pid: int) -> str:
    out = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def processes_mentioning(marker: str) -> list[int]:
    """PIDs of running processes whose command line contains `marker`."""
    found = []
    for pid, cmdline in _command_lines():
        if pid != os.getpid() and marker in cmdline and pid_alive(pid):
            found.append(pid)
    return found


def _command_lines() -> list[tuple[int, str]]:
    proc = Path("/proc")
    if proc.is_dir():
        lines = []
        for entry in proc.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    raw = (entry / "cmdline").read_bytes()
                    lines.append(
                        (int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace"))
                    )
        return lines
    # No /proc (macOS): ps prints the same information.
    out = subprocess.run(
        ["ps", "-axww", "-o", "pid=,command="], capture_output=True, text=True, check=False
    ).stdout
    return [
        (int(pid), rest)
        for pid, _, rest in (line.strip().partition(" ") for line in out.splitlines())
        if pid.isdigit()
    ]


def owns(pid: int, marker: str) -> bool:
    """Whether `pid` is still one of ours (guards against a recycled PID)."""
    return pid in processes_mentioning(marker)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_node(node: NodeProcess, marker: str, timeout: float = 20.0) -> bool:
    """Stop one node: SIGTERM its `ray start`, then its process group, then SIGKILL."""
    if pid_alive(node.pid) and owns(node.pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
        if wait_until(lambda: not pid_alive(node.pid), timeout / 2):
            # Its daemons share its process group; make sure none outlived it.
            _signal_group(node.pid, signal.SIGTERM)
            return True
        _signal_group(node.pid, signal.SIGTERM)
        if wait_until(lambda: not pid_alive(node.pid), timeout / 4):
            return True
        _signal_group(node.pid, signal.SIGKILL)
    return wait_until(lambda: not pid_alive(node.pid), timeout / 4)


def stop_cluster(state: ClusterState, timeout: float = 30.0) -> list[int]:
    """Stop every node (workers first), then anything else naming our base dir.

    Returns the PIDs still running afterwards (empty when all is gone).
    """
    marker = process_marker(state)
    for node in reversed(state.nodes):
        stop_node(node, marker, timeout=timeout / 2)
    # Workers Ray forked into sessions of their own are not in any node's group.
    for pid in processes_mentioning(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes_mentioning(marker), timeout / 2)
    return processes_mentioning(marker)


# --- starting ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartOptions:
    head_port: int | None = None
    workers: int = 0
    num_cpus: int | None = None
    dashboard: bool = True
    object_store_mb: int | None = None
    timeout: float = 120.0


def free_port() -> int:
    """A TCP port nobody listens on right now on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def node_environment(auth_mode: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every `ray start` of ours runs with."""
    env = dict(os.environ if base is None else base)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env[AUTH_MODE_ENV] = auth_mode
    # On SIGTERM a node first drains for Ray Serve's sake (30 s by default);
    # a local dev cluster has nothing to drain and should stop promptly.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    # This switch pins a single-node cluster to loopback; set to 0 it also makes
    # `ray start` refuse to join worker nodes, which a multi-node cluster needs.
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    return env


def choose_auth_mode(progress: Progress) -> tuple[str, str | None]:
    """Token auth unless the user explicitly set RAY_AUTH_MODE; make sure a token exists."""
    requested = os.environ.get(AUTH_MODE_ENV, "token").strip().lower() or "token"
    if requested != "token":
        progress(
            f"warning: {AUTH_MODE_ENV}={requested} in your environment: this cluster runs WITHOUT "
            "token authentication; anyone who can reach its ports can run code on it."
        )
        return requested, None
    token = find_token()
    if token is None:
        progress("no Ray auth token found; generating one with `ray get-auth-token --generate`")
        _generate_token()
        token = find_token()
        if token is None:
            raise CliError(
                "`ray get-auth-token --generate` did not leave a token at ~/.ray/auth_token",
                ExitCode.AUTH,
            )
    return "token", token.origin


def _generate_token() -> None:
    # Ray's own command writes the token where every Ray client looks for it;
    # it prints the token on stdout, which we drop rather than show.
    result = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        check=False,
    )
    if result.returncode != 0:
        raise CliError(
            f"`ray get-auth-token --generate` failed: {result.stderr.strip()[-500:]}", ExitCode.AUTH
        )


def _make_base_dir() -> str:
    root = tempfile.gettempdir()
    if len(root) > _MAX_BASE_LEN - 16:
        root = "/tmp"
    return tempfile.mkdtemp(prefix="dspex-", dir=root)


def _node_args(
    name: str, temp_dir: str, ports: dict[str, int], options: StartOptions, gcs_address: str | None
) -> list[str]:
    args = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
        f"--node-ip-address={LOOPBACK}",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={ports['agent']}",
        "--disable-usage-stats",
    ]  # fmt: skip
    if gcs_address is None:
        args += [
            "--head",
            f"--port={ports['gcs']}",
            f"--ray-client-server-port={ports['client']}",
            f"--include-dashboard={'true' if options.dashboard else 'false'}",
            f"--dashboard-host={LOOPBACK}",
        ]
        if options.dashboard:
            args.append(f"--dashboard-port={ports['dashboard']}")
    else:
        args.append(f"--address={gcs_address}")
    if options.num_cpus is not None:
        args.append(f"--num-cpus={options.num_cpus}")
    if options.object_store_mb is not None:
        args.append(f"--object-store-memory={options.object_store_mb * 1024 * 1024}")
    return args


def _launch(
    name: str, base_dir: str, options: StartOptions, env: Mapping[str, str], gcs_address: str | None
) -> tuple[NodeProcess, subprocess.Popen[bytes]]:
    temp_dir = os.path.join(base_dir, name)
    os.makedirs(temp_dir, exist_ok=True)
    ports = {"agent": free_port()}
    if gcs_address is None:
        ports |= {
            "gcs": options.head_port or free_port(),
            "client": free_port(),
            "dashboard": free_port(),
        }
    log = os.path.join(base_dir, f"{name}.log")
    with open(log, "wb") as out:
        # A session of its own: the node outlives this CLI process and can be
        # signalled as a group without touching anything else.
        proc = subprocess.Popen(
            _node_args(name, temp_dir, ports, options, gcs_address),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    return NodeProcess(name=name, pid=proc.pid, temp_dir=temp_dir, log=log, ports=ports), proc


def _wait_ready(node: NodeProcess, proc: subprocess.Popen[bytes], timeout: float) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise CliError(
                f"{node.name} node exited with code {proc.returncode} while starting:\n{log_tail(node.log)}",
                ExitCode.FAILED,
            )
        return READY_MARK in Path(node.log).read_text(errors="replace")

    if not wait_until(ready, timeout, interval=0.3):
        raise CliError(
            f"{node.name} node did not start within {timeout:.0f}s:\n{log_tail(node.log)}",
            ExitCode.FAILED,
        )


def log_tail(path: str, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) + f"\n(full log: {path})"


def start_cluster(
    options: StartOptions, progress: Progress, directory: Path | None = None
) -> ClusterState:
    """Start a head and `options.workers` worker nodes; on any failure stop what started."""
    directory = directory or state_dir()
    _refuse_if_running(directory)
    auth_mode, token_origin = choose_auth_mode(progress)
    env = node_environment(auth_mode)
    base_dir = _make_base_dir()
    state = ClusterState(
        base_dir=base_dir,
        gcs_address="",
        dashboard_url=None,
        client_address="",
        auth_mode=auth_mode,
        token_origin=token_origin,
    )
    try:
        _start_nodes(state, options, env, progress, directory)
    except BaseException:
        progress("start failed; stopping the nodes that did start")
        stop_cluster(state)
        clear_state(directory)
        raise
    return state


def _start_nodes(
    state: ClusterState,
    options: StartOptions,
    env: Mapping[str, str],
    progress: Progress,
    directory: Path,
) -> None:
    deadline = time.monotonic() + options.timeout
    progress("starting the head node")
    head, head_proc = _launch("head", state.base_dir, options, env, None)
    state.nodes.append(head)
    state.gcs_address = f"{LOOPBACK}:{head.ports['gcs']}"
    state.client_address = f"ray://{LOOPBACK}:{head.ports['client']}"
    state.dashboard_url = (
        f"http://{LOOPBACK}:{head.ports['dashboard']}" if options.dashboard else None
    )
    save_state(state, directory)
    _wait_ready(head, head_proc, deadline - time.monotonic())
    if options.workers:
        progress(f"starting {options.workers} worker node(s)")
    # Worker nodes have separate temp dirs, so they can start side by side.
    launched = [
        _launch(f"worker-{i}", state.base_dir, options, env, state.gcs_address)
        for i in range(1, options.workers + 1)
    ]
    state.nodes.extend(node for node, _ in launched)
    save_state(state, directory)
    for node, proc in launched:
        _wait_ready(node, proc, deadline - time.monotonic())
    if state.dashboard_url:
        _wait_for_nodes(state.dashboard_url, 1 + options.workers, deadline)


def _wait_for_nodes(dashboard_url: str, expected: int, deadline: float) -> None:
    from dspex.cli.cluster_access import auth_headers, list_nodes

    def all_alive() -> bool:
        try:
            nodes = list_nodes(dashboard_url, auth_headers(dashboard_url))
        except CliError as exc:
            if exc.code is ExitCode.AUTH:
                raise
            return False  # the dashboard is still coming up
        return sum(node.get("state") == "ALIVE" for node in nodes) >= expected

    if not wait_until(all_alive, max(deadline - time.monotonic(), 0.0), interval=0.5):
        raise CliError(
            f"the cluster did not report {expected} live node(s) at {dashboard_url} in time",
            ExitCode.FAILED,
        )


def _refuse_if_running(directory: Path) -> None:
    state = load_state(directory)
    if state is None:
        return
    running = [
        node
        for node in state.nodes
        if pid_alive(node.pid) and owns(node.pid, process_marker(state))
    ]
    if running:
        raise CliError(
            f"a dspex cluster is already running (head {state.gcs_address}, dashboard {state.dashboard_url}, "
            f"state in {directory}). Use it, or run `dspex cluster stop` first; for a second cluster set "
            "DSPEX_STATE_DIR to another directory.",
            ExitCode.CONFLICT,
        )
    # The processes are gone (reboot, kill): clean what they left.
    stop_cluster(state, timeout=10.0)
    remove_base_dir(state)
    clear_state(directory)


def process_marker(state: ClusterState) -> str:
    """The string every process of this cluster has on its command line.

    With the trailing separator, /tmp/dspex-ab12 cannot match /tmp/dspex-ab123.
    """
    return os.path.join(state.base_dir, "")


def remove_base_dir(state: ClusterState) -> None:
    shutil.rmtree(state.base_dir, ignore_errors=True)
