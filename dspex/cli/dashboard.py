"""`dspex dashboard`: serve the live dashboard of runs and the runtime.

The command only parses options and prints; the server lives in
dspex/dashboard/ and is imported when the command runs, so `dspex --help`
does not pay for aiohttp.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from dspex.cli.common import ExitCode, exit_codes_help, fail, note

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DEFAULT_PORT = 8377  # kept equal to dspex.dashboard.server.DEFAULT_PORT (Ray's dashboard has 8265)
EPILOG = exit_codes_help(
    ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, overrides={ExitCode.FAILED: "the server could not start"}
)


def dashboard(
    host: Annotated[
        str,
        typer.Option(help="Interface to serve on. Anything but loopback exposes your runs to the network."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: a free one).")] = DEFAULT_PORT,
    db: Annotated[
        Optional[Path],
        typer.Option(help="Run store to read (default: $DSPEX_RUNS_DB, else the user data dir's runs.sqlite3)."),
    ] = None,
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Ray cluster to attach to ('auto' for the local one) to show provider pools, "
            "the supervision tree and dead letters."
        ),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
) -> None:
    """Serve a live web dashboard of optimization runs, LM usage and the runtime.

    Shows every run in the run store with its trials' scores as they come in,
    LM calls and cost per model, and, with --address, the provider pools'
    breaker states and rates, the supervision tree and dead letters.

    Examples:

        dspex dashboard

        dspex dashboard --db ./runs.sqlite3 --port 0 --open

        dspex dashboard --address auto
    """
    import sqlite3

    from dspex.dashboard.server import DashboardError, is_loopback, serve_forever
    from dspex.optimizers.run_store import RunStore

    if not is_loopback(host):
        note(
            f"warning: serving on {host}: anyone who can reach this address can read your runs "
            "(configs, scores, errors, costs); the dashboard has no login"
        )
    try:
        store = RunStore(db)
    except (OSError, sqlite3.Error) as exc:
        fail(f"cannot open the run store {db or '(default)'}: {exc}", ExitCode.USAGE)
    try:
        serve_forever(
            store,
            host=host,
            port=port,
            address=address,
            allow_remote=True,  # the host came from the command line: the user chose it
            on_ready=lambda url: _announce(url, store.path, open_browser),
        )
    except DashboardError as exc:
        fail(str(exc), ExitCode.FAILED)


def _announce(url: str, store_path: Path, open_browser: bool) -> None:
    note(f"dspex dashboard: {url}  (reading {store_path}; Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
