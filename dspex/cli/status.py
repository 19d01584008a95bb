"""`dspex status`: the running dspex runtime on a cluster, at a glance.

Prints the supervision tree (states, restart counts), the provider pools
(breaker, rate, in flight, calls, errors) and the dead letters. The command
only attaches to the cluster and reads: it starts nothing there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Annotated, Any, Optional

import typer

from dspex.cli.common import ExitCode, emit_json, exit_codes_help, fail
from dspex.errors import CliError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

EPILOG = exit_codes_help(
    ExitCode.OK,
    ExitCode.UNREACHABLE,
    ExitCode.AUTH,
    overrides={ExitCode.UNREACHABLE: "no cluster answered, or no dspex runtime runs on it"},
)
RECENT_DEAD_LETTERS = 5
_STATE_STYLES = {"running": "green", "restarting": "yellow", "terminated": "red"}
_BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "red"}
NO_RUNTIME_HINT = (
    "The dspex runtime (the supervision tree) runs while a driver that called dspex.init() "
    "holds it, and stops with that driver's dspex.shutdown(); a cluster started with "
    "`dspex cluster start` keeps one running until `dspex cluster stop`. Run `dspex status` "
    "while your driver runs, or start the cluster with `dspex cluster start`."
)


def status(
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Ray cluster to read (GCS address host:port, or 'auto'). Default: $RAY_ADDRESS, "
            "then the cluster `dspex cluster start` started, then the local one."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the dspex runtime on a cluster: supervision tree, provider pools, dead letters.

    Uses the cluster's Ray auth token the way Ray does ($RAY_AUTH_TOKEN,
    $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); RAY_AUTH_MODE need not be set.

    Examples:

        dspex status

        dspex status --address 127.0.0.1:6379 --json
    """
    from dspex.runtime import ClusterAuthError, ClusterUnreachableError, RuntimeNotRunningError

    target, ours = _resolve_address(address)
    try:
        report = _read(target)
    except ClusterAuthError as exc:
        fail(str(exc) + _our_token_hint(ours), ExitCode.AUTH)
    except ClusterUnreachableError as exc:
        fail(str(exc), ExitCode.UNREACHABLE)
    except RuntimeNotRunningError as exc:
        fail(f"{exc}. {NO_RUNTIME_HINT}", ExitCode.UNREACHABLE)
    if json_output:
        emit_json(report)
    else:
        _print(report)


def _resolve_address(explicit: str | None) -> tuple[str, Any]:
    """The address to read, and the `dspex cluster start` state when it is that cluster."""
    try:
        from dspex.cli.local_cluster import load_state

        state = load_state()
    except CliError:
        state = None  # a damaged state file: `dspex cluster status` reports it
    address = explicit or os.environ.get("RAY_ADDRESS") or (state.gcs_address if state else "auto")
    return address, state if state is not None and address == state.gcs_address else None


def _our_token_hint(state: Any) -> str:
    origin = getattr(state, "token_origin", None)
    if not origin:
        return ""
    path = origin.split(" (", 1)[0]
    if path.startswith("$"):
        return f" This cluster was started with the token in {path}."
    return (
        f" This cluster (`dspex cluster start`) uses the token in {path}: "
        f"export RAY_AUTH_TOKEN_PATH={path}"
    )


def _read(address: str) -> dict[str, Any]:
    from dspex import runtime
    from dspex.cli.common import waiting

    with waiting(f"connecting to the Ray cluster at {address}"):
        # Ray is imported only inside connect(), after the token is set up (Ray reads
        # RAY_AUTH_MODE once, at import); its logging stays quiet so --json output is clean.
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            runtime.connect(address, logging_level=logging.WARNING)
        return runtime.status(recent=RECENT_DEAD_LETTERS)


# --- printing ----------------------------------------------------------------------------


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.panel import Panel

    console = Console()
    console.print(f"[bold]dspex runtime[/bold] at {report.get('address') or '?'}")
    console.print(Panel(_styled_tree(report["tree_text"]), title="supervision tree", expand=False))
    console.print(_pools_table(report["pools"]))
    letters = report["dead_letters"]
    console.print(f"[bold]dead letters:[/bold] {letters['count']}")
    if letters["recent"]:
        console.print(_dead_letters_table(letters["recent"]))


def _styled_tree(text: str) -> str:
    from rich.markup import escape

    lines = []
    for line in escape(text).splitlines():
        for state, style in _STATE_STYLES.items():
            line = line.replace(f"] {state}", f"] [{style}]{state}[/{style}]")
        lines.append(line)
    return "\n".join(lines)


def _pools_table(pools: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"provider pools ({len(pools)})", title_justify="left")
    for column in ("model", "breaker", "req/s", "in flight", "queued", "calls", "errors", "retries"):
        table.add_column(column, justify="left" if column in ("model", "breaker") else "right")
    for pool in pools:
        breaker = str(pool.get("breaker", "?"))
        style = _BREAKER_STYLES.get(breaker, "red")
        table.add_row(
            str(pool.get("model", pool.get("name", "?"))),
            f"[{style}]{breaker}[/{style}]",
            f"{pool.get('requests_per_s') or 0:.1f}",
            *(str(pool.get(key, 0)) for key in ("in_flight", "queued", "calls", "errors", "retries")),
        )
    return table


def _dead_letters_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="most recent", title_justify="left")
    for column in ("when", "source", "attempts", "reason"):
        table.add_column(column)
    for row in rows:
        when = time.strftime("%H:%M:%S", time.localtime(row["time"])) if row.get("time") else "?"
        table.add_row(when, str(row["source"]), str(row["attempts"]), str(row["reason"]))
    return table
