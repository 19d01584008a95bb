"""`dspex cluster start|stop|status`: a local multi-node Ray cluster for development.

The nodes are started by Ray's own `ray start` (see dspex/cli/local_cluster.py);
this module is the command-line surface: options, messages, exit codes.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, Optional

import typer

from dspex.cli.common import ExitCode, emit_json, exit_codes_help, fail, note
from dspex.errors import CliError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

app = typer.Typer(
    help="Start, stop and inspect a local multi-node Ray cluster.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.callback()
def _group() -> None:
    """Start, stop and inspect a local multi-node Ray cluster.

    The nodes are real `ray start` processes on 127.0.0.1, with token
    authentication on and usage statistics off.
    """


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.AUTH, ExitCode.CONFLICT
    )
)
def start(
    head_port: Annotated[
        Optional[int],
        typer.Option(min=1, max=65535, help="GCS port of the head node (default: a free port)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="Extra worker nodes to start on this machine.")
    ] = 0,
    num_cpus: Annotated[
        Optional[int],
        typer.Option(min=0, help="CPUs each node offers (default: Ray detects them)."),
    ] = None,
    object_store_mb: Annotated[
        Optional[int],
        typer.Option(min=75, help="Object store size per node in MiB (default: Ray's)."),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(help="Run the dashboard (it serves the Jobs API that `dspex submit` needs)."),
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for all nodes to come up.")
    ] = 120.0,
    runtime: Annotated[
        bool,
        typer.Option(
            help="Start the dspex runtime (supervision tree) on the cluster and keep it up until "
            "`dspex cluster stop`, so `dspex status` shows it between drivers."
        ),
    ] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the addresses as JSON.")
    ] = False,
) -> None:
    """Start a Ray head node and --workers worker nodes on this machine.

    Prints the address to connect with and where the auth token is. Run
    `dspex cluster stop` to stop everything it started.

    With --runtime (the default) the dspex supervision tree starts with the
    cluster, as detached actors: drivers attach to it with dspex.init() and
    leave it running at dspex.shutdown(), the way Ray Serve outlives the
    scripts that use it.

    Examples:

        dspex cluster start

        dspex cluster start --workers 2 --num-cpus 1 --json
    """
    from dspex.cli import local_cluster

    options = local_cluster.StartOptions(
        head_port=head_port,
        workers=workers,
        num_cpus=num_cpus,
        dashboard=dashboard,
        object_store_mb=object_store_mb,
        timeout=timeout,
    )
    try:
        state = local_cluster.start_cluster(options, note)
    except CliError as exc:
        fail(str(exc), exc.code)
    except KeyboardInterrupt:
        fail("interrupted; the nodes that had started were stopped", ExitCode.INTERRUPTED)
    runtime_error = _start_runtime(state) if runtime else None
    info = _connection_info(state)
    info["runtime"] = runtime and runtime_error is None
    if json_output:
        emit_json(info)
    else:
        _print_connection_info(info)


def _start_runtime(state: Any) -> str | None:
    """Start the dspex tree on the new cluster from a short-lived driver; None when it runs.

    The root supervisor is a detached actor, so the tree outlives this process;
    a driver that attaches later does not own it, so its dspex.shutdown() leaves
    it up. A tree that fails to start is reported, not fatal: the cluster itself
    is up, and the first driver's dspex.init() starts a tree as before.
    """
    from dspex import runtime
    from dspex.cli.common import waiting

    try:
        with waiting("starting the dspex runtime (supervision tree) on the cluster"):
            runtime.init(address=state.gcs_address, logging_level=logging.WARNING)
            runtime.shutdown(stop_tree=False)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        note(
            f"warning: the cluster is up but the dspex runtime did not start ({message}); "
            "the first driver's dspex.init() starts it instead"
        )
        return message
    return None


def _connection_info(state: Any) -> dict[str, Any]:
    from dspex.cli.local_cluster import STATE_FILE, state_dir

    return {
        "gcs_address": state.gcs_address,
        "client_address": state.client_address,
        "dashboard_url": state.dashboard_url,
        "nodes": len(state.nodes),
        "auth_mode": state.auth_mode,
        "token_origin": state.token_origin,
        "driver_env": _driver_env(state),
        "state_file": str(state_dir() / STATE_FILE),
        "logs": state.base_dir,
        "pids": {node.name: node.pid for node in state.nodes},
    }


def _driver_env(state: Any) -> dict[str, str]:
    """What a driver process on this machine needs in its environment to connect.

    With an explicit address Ray only sends a token when RAY_AUTH_MODE=token is
    set in the driver's own environment (a token file alone is not enough).
    """
    env = {"RAY_ADDRESS": state.gcs_address}
    if state.auth_mode == "token":
        env["RAY_AUTH_MODE"] = "token"
        token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
        if token_path and "RAY_AUTH_TOKEN_PATH" in (state.token_origin or ""):
            env["RAY_AUTH_TOKEN_PATH"] = token_path
    return env


def _print_connection_info(info: dict[str, Any]) -> None:
    gcs, jobs = info["gcs_address"], info["dashboard_url"]
    exports = " ".join(f"{key}={value}" for key, value in info["driver_env"].items())
    lines = [
        f"Ray cluster up: {info['nodes']} node(s), auth {info['auth_mode']}.",
        f"  GCS address:      {gcs}",
        f"  Ray Client:       {info['client_address']}",
        f"  Dashboard / Jobs: {jobs or '(none: started with --no-dashboard)'}",
        "Connect a driver on this machine:",
        f"  export {exports}",
        f'  then in Python: dspex.init() (or dspex.init(address="{gcs}"))',
    ]
    if jobs:
        lines.append(f"Submit a script as a job: dspex submit script.py --address {jobs}")
    if info["auth_mode"] == "token":
        lines.append(
            f"Auth token: {info['token_origin']} (`ray get-auth-token` prints it for other machines)."
        )
    if info.get("runtime"):
        lines.append(
            "dspex runtime up: drivers attach to it and leave it running; `dspex status` shows it."
        )
    lines.append(f"Logs under {info['logs']}. Stop with: dspex cluster stop")
    typer.echo("\n".join(lines))


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK, ExitCode.FAILED, overrides={ExitCode.OK: "stopped, or nothing to stop"}
    )
)
def stop(
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the processes to exit.")
    ] = 60.0,
    keep_logs: Annotated[bool, typer.Option(help="Keep the nodes' log directory.")] = False,
) -> None:
    """Stop the cluster `dspex cluster start` started (every process of it, nothing else).

    Examples:

        dspex cluster stop

        dspex cluster stop --keep-logs
    """
    from dspex.cli import local_cluster

    try:
        state = local_cluster.load_state()
    except CliError as exc:
        fail(str(exc), exc.code)
    if state is None:
        note(f"no dspex cluster to stop (no state in {local_cluster.state_dir()})")
        raise typer.Exit(int(ExitCode.OK))
    note(f"stopping {len(state.nodes)} node(s)")
    leftover = local_cluster.stop_cluster(state, timeout=timeout)
    if leftover:
        fail(
            f"these processes of the cluster are still running: {leftover}; kill them by PID",
            ExitCode.FAILED,
        )
    local_cluster.clear_state()
    if keep_logs:
        note(f"logs kept in {state.base_dir}")
    else:
        local_cluster.remove_base_dir(state)
    typer.echo(f"stopped {len(state.nodes)} node(s)")


@app.command(
    epilog=exit_codes_help(ExitCode.OK, ExitCode.USAGE, ExitCode.UNREACHABLE, ExitCode.AUTH)
)
def status(
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Dashboard URL of the cluster (default: the one `dspex cluster start` started)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the cluster's nodes (alive and dead) and their resources.

    Examples:

        dspex cluster status

        dspex cluster status --address http://10.0.0.5:8265 --json
    """
    try:
        report = _status_report(address)
    except CliError as exc:
        fail(str(exc), exc.code)
    if json_output:
        emit_json(report)
    else:
        _print_status(report)


def _status_report(address: str | None) -> dict[str, Any]:
    from dspex.cli import cluster_access, local_cluster

    state = local_cluster.load_state()
    if address is None and state is not None and state.dashboard_url is None:
        return _process_report(state)
    try:
        url = cluster_access.resolve_address(address, state.dashboard_url if state else None)
    except CliError as exc:
        # "Is there a cluster?" has the answer "no" here, not "bad usage".
        raise CliError(str(exc), ExitCode.UNREACHABLE) from exc
    nodes = cluster_access.list_nodes(url, cluster_access.auth_headers(url))
    return _summarize(url, nodes)


def _summarize(url: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    alive = [node for node in nodes if node.get("state") == "ALIVE"]
    totals: dict[str, float] = {}
    for node in alive:
        for name, amount in (node.get("resources_total") or {}).items():
            if not name.startswith("node:"):
                totals[name] = totals.get(name, 0.0) + float(amount)
    rows = [
        {
            "node_id": node.get("node_id"),
            "ip": node.get("node_ip"),
            "head": bool(node.get("is_head_node")),
            "state": node.get("state"),
            "resources": {
                k: v
                for k, v in (node.get("resources_total") or {}).items()
                if not k.startswith("node:")
            },
        }
        for node in nodes
    ]
    return {
        "address": url,
        "alive": len(alive),
        "dead": len(nodes) - len(alive),
        "resources": totals,
        "nodes": rows,
    }


def _process_report(state: Any) -> dict[str, Any]:
    # Without a dashboard there is no HTTP API to ask; report our processes.
    from dspex.cli.local_cluster import pid_alive

    rows = [
        {"node_id": node.name, "pid": node.pid, "state": "ALIVE" if pid_alive(node.pid) else "DEAD"}
        for node in state.nodes
    ]
    alive = sum(row["state"] == "ALIVE" for row in rows)
    return {
        "address": state.gcs_address,
        "alive": alive,
        "dead": len(rows) - alive,
        "resources": {},
        "nodes": rows,
    }


def _print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['address']}: {report['alive']} alive, {report['dead']} dead")
    for column in ("node", "ip", "role", "state", "CPU", "memory GiB", "object store GiB"):
        table.add_column(column)
    for row in report["nodes"]:
        res = row.get("resources", {})
        table.add_row(
            str(row["node_id"])[:12],
            str(row.get("ip", "")),
            "head" if row.get("head") else "worker",
            str(row["state"]),
            _fmt(res.get("CPU")),
            _fmt(res.get("memory"), 2**30),
            _fmt(res.get("object_store_memory"), 2**30),
        )
    Console().print(table)
    totals = report["resources"]
    if totals:
        typer.echo(
            f"alive total: CPU {_fmt(totals.get('CPU'))}, memory {_fmt(totals.get('memory'), 2**30)} GiB"
        )


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return (
        "-" if value is None else f"{value / scale:g}" if scale == 1.0 else f"{value / scale:.1f}"
    )
