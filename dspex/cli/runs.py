"""`dspex runs list|show|resume|cancel`: optimization runs in the run store.

Reads the SQLite run store (dspex/optimizers/run_store.py). A store file is
never created by these commands: a path that does not exist means "no runs".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from dspex.cli.common import (
    ExitCode,
    emit_json,
    exit_codes_help,
    fail,
    note,
    waiting,
)
from dspex.errors import CliError

if TYPE_CHECKING:
    from dspex.optimizers.run_store import RunRecord, RunStore

RESUMABLE = ("running", "failed", "budget_limited")

app = typer.Typer(
    help="Inspect, resume and cancel optimization runs.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DbOption = Annotated[
    Optional[Path],
    typer.Option(
        "--db",
        help="Run store file (default: $DSPEX_RUNS_DB, else runs.sqlite3 in the dspex user data dir).",
        show_default=False,
    ),
]
RunIdArgument = Annotated[
    str,
    typer.Argument(
        help="The run's ID, or a prefix of it that matches one run (see `dspex runs list`).",
        show_default=False,
    ),
]
# A prefix that matches several runs is a usage error: say so in every epilog.
AMBIGUOUS = {ExitCode.USAGE: "a run ID prefix that matches several runs (they are listed)"}


@app.callback()
def _group() -> None:
    """Inspect, resume and cancel optimization runs recorded in the run store."""


def _store_path(db: Path | None) -> Path:
    from dspex.optimizers.run_store import default_store_path

    return db if db is not None else default_store_path()


def _open_store(db: Path | None) -> RunStore | None:
    """The store at `db` (or the default), or None when that file does not exist."""
    from dspex.optimizers.run_store import RunStore

    path = _store_path(db)
    return RunStore(path) if path.is_file() else None


def _get_run(db: Path | None, run_id: str) -> tuple[RunStore, RunRecord]:
    """The run named by `run_id`: its full id, or a prefix that matches only it."""
    store = _open_store(db)
    if store is not None and store.has_run(run_id):
        return store, store.get_run(run_id)
    matches = store.runs_with_prefix(run_id, limit=_SHOWN_MATCHES + 1) if store and run_id else []
    if len(matches) == 1:
        return store, store.get_run(matches[0])  # type: ignore[union-attr]
    where = _store_path(db)
    if matches:
        listed = "\n  ".join(matches[:_SHOWN_MATCHES])
        more = "\n  ..." if len(matches) > _SHOWN_MATCHES else ""
        raise CliError(
            f"{run_id!r} is the start of several runs in {where}:\n  {listed}{more}\n"
            "give more of the run ID",
            ExitCode.USAGE,
        )
    raise CliError(
        f"no run {run_id!r} in {where}; `dspex runs list` shows the runs there "
        "(use --db or DSPEX_RUNS_DB for another store)",
        ExitCode.NOT_FOUND,
    )


_SHOWN_MATCHES = 10


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# --- list --------------------------------------------------------------------------------


@app.command("list", epilog=exit_codes_help(ExitCode.OK))
def list_runs(
    db: DbOption = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Show at most this many runs, newest first.")
    ] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List optimization runs, newest first.

    Examples:

        dspex runs list

        dspex runs list --limit 5 --json --db ./runs.sqlite3
    """
    store = _open_store(db)
    runs = store.list_runs(limit=limit) if store else []
    rows = (
        [{**asdict(run), "trials": len(store.trials(run.run_id))} for run in runs] if store else []
    )
    if json_output:
        emit_json(rows)
        return
    if not rows:
        typer.echo(f"no runs in {_store_path(db)}")
        return
    _print_run_table(rows)


_RUN_COLUMNS = ("RUN", "OPTIMIZER", "STATUS", "BEST", "TRIALS", "UPDATED")


def _print_run_table(rows: list[dict[str, Any]]) -> None:
    """Aligned plain-text columns (as `kubectl get` prints them), run ids never cut.

    The id is what users copy into `runs show`, so it is printed whole at any
    terminal width; a rich table would crop or wrap it to fit the terminal.
    A line wider than the terminal wraps there, with the id still in one piece.
    """
    cells = [
        (
            row["run_id"],
            row["optimizer"],
            row["status"],
            _score(row["best_score"]),
            str(row["trials"]),
            _when(row["updated"]),
        )
        for row in rows
    ]
    columns = zip(_RUN_COLUMNS, *cells, strict=True)
    widths = [max(len(text) for text in column) for column in columns]
    for line in (_RUN_COLUMNS, *cells):
        padded = (text.ljust(width) for text, width in zip(line, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


# --- show --------------------------------------------------------------------------------


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK,
        ExitCode.FAILED,
        ExitCode.USAGE,
        ExitCode.NOT_FOUND,
        overrides={
            **AMBIGUOUS,
            ExitCode.FAILED: "--save: the run stored no program (it failed, was cancelled, or "
            "is still running), or the file could not be written",
        },
    )
)
def show(
    run_id: RunIdArgument,
    db: DbOption = None,
    save: Annotated[
        Optional[Path],
        typer.Option(
            help="Write the run's optimized program to this JSON file (load it with "
            "program.load(FILE)).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Show a run: its status and config, every trial (score, status, error) and LM usage and cost.

    A finished (or budget-stopped) run also holds its optimized program, whichever
    machine or job ran it: --save writes it to a file.

    Examples:

        dspex runs show 3f2a9c

        dspex runs show bootstrapfewshot-3f --save program.json

        dspex runs show 3f2a9c --json | jq '.trials[] | select(.status == "failed")'
    """
    try:
        store, run = _get_run(db, run_id)
    except CliError as exc:
        fail(str(exc), exc.code)
    run_id = run.run_id  # the full id, when a prefix was given
    usage = store.usage(run_id)
    program = store.get_program(run_id)
    report = {
        "run": asdict(run),
        "trials": [asdict(trial) for trial in store.trials(run_id)],
        "usage": usage,
        "total_cost": sum(float(model["cost"]) for model in usage.values()),
        "program_stored": program is not None,
    }
    if save is not None:
        _save_program(run, program, save)
    if json_output:
        emit_json(report)
    else:
        _print_run(report)
    if save is not None:
        note(f"saved the program of run {run_id} to {save}")


def _save_program(run: RunRecord, program: str | None, path: Path) -> None:
    if program is None:
        fail(
            f"run {run.run_id} is {run.status} and stored no program: only a finished or "
            "budget-stopped run has one (runs made before dspex stored programs have none either)",
            ExitCode.FAILED,
        )
    try:
        path.write_text(program + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc}", ExitCode.FAILED)


def _print_run(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    run = report["run"]
    console = Console()
    console.print(
        f"[bold]{run['run_id']}[/bold]  {run['optimizer']}  status {run['status']}  best score {_score(run['best_score'])}"
    )
    console.print(
        f"created {_when(run['created'])}, updated {_when(run['updated'])}"
        + (", stopped by budget" if run["budget_limited"] else "")
    )
    if run["error"]:
        console.print(f"[red]error:[/red] {run['error']}", markup=True, highlight=False)
    if report["program_stored"]:
        console.print(
            f"program: stored; `dspex runs show {run['run_id']} --save program.json` writes it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"config: {json.dumps(run['config'], sort_keys=True, default=str)}", markup=False)
    trials = Table(title=f"{len(report['trials'])} trial(s)")
    for column in ("#", "kind", "status", "score", "params", "error"):
        trials.add_column(column)
    for trial in report["trials"]:
        params = json.dumps(trial["params"], sort_keys=True, default=str)
        trials.add_row(
            str(trial["number"]),
            trial["kind"],
            trial["status"],
            _score(trial["score"]),
            params[:60],
            (trial["error"] or "")[:60],
        )
    console.print(trials)
    usage = Table(title=f"LM usage (total cost ${report['total_cost']:.4f})")
    for column in ("model", "calls", "prompt tokens", "completion tokens", "cost $"):
        usage.add_column(column)
    for model, numbers in sorted(report["usage"].items()):
        usage.add_row(
            model,
            str(numbers["calls"]),
            str(numbers["prompt_tokens"]),
            str(numbers["completion_tokens"]),
            f"{numbers['cost']:.4f}",
        )
    console.print(usage)


# --- resume / cancel ---------------------------------------------------------------------


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK,
        ExitCode.FAILED,
        ExitCode.USAGE,
        ExitCode.UNREACHABLE,
        ExitCode.NOT_FOUND,
        overrides={
            **AMBIGUOUS,
            ExitCode.OK: "resumed and finished (or, for an in-process run, resumable)",
            ExitCode.FAILED: "not resumable (finished or cancelled), or the resumed run failed",
        },
    )
)
def resume(
    run_id: RunIdArgument,
    db: DbOption = None,
    address: Annotated[
        Optional[str], typer.Option(help="Ray cluster to resume on (default: RAY_ADDRESS, else a local Ray).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option(help="Where to save the resumed program (default: RUN_ID.json).")
    ] = None,
) -> None:
    """Resume a run from its last checkpoint.

    A run compiled through the runtime (its job is in the run store) is finished
    here: its coordinator is attached to, or started again on the cluster, and
    the optimized program is saved to --output. A run compiled in-process needs
    its program and data: this prints how to resume it from Python.

    Examples:

        dspex runs resume bootstrapfewshot-3f2a9c

        dspex runs resume mipro-1b2c --address 127.0.0.1:6380 --output best.json
    """
    try:
        store, run = _get_run(db, run_id)
    except CliError as exc:
        fail(str(exc), exc.code)
    run_id = run.run_id  # the full id, when a prefix was given
    if run.status not in RESUMABLE:
        fail(
            f"run {run_id} is {run.status}; only {', '.join(RESUMABLE)} runs can be resumed. Start a new run instead.",
            ExitCode.FAILED,
        )
    from dspex.runtime.coordinator import JOB_KEY

    has_job, _ = store.get_step(run_id, JOB_KEY)
    if not has_job:
        typer.echo(
            f"run {run_id} ({run.optimizer}, {run.status}) ran in-process; resume it from Python with the "
            "same optimizer settings, program and data:\n\n"
            f'    optimized = optimizer.compile(program, trainset=trainset, run_id="{run_id}")\n'
        )
        return
    _resume_on_cluster(store, run_id, address, output or Path(f"{run_id}.json"))


def _resume_on_cluster(store: RunStore, run_id: str, address: str | None, output: Path) -> None:
    import dspex.runtime
    from dspex.errors import ConfigurationError
    from dspex.runtime.runs import resume as resume_run

    try:
        target = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
        with waiting(f"connecting to {target}"):
            dspex.runtime.init(address=address)
    except ConfigurationError as exc:
        fail(str(exc), ExitCode.UNREACHABLE)
    note(f"resuming run {run_id} from its last checkpoint")
    try:
        program = resume_run(run_id, store=store)
    except Exception as exc:
        fail(f"run {run_id} could not be finished: {type(exc).__name__}: {exc}", ExitCode.FAILED)
    finally:
        dspex.runtime.shutdown()
    program.save(str(output))
    typer.echo(f"run {run_id} finished; the optimized program is in {output}")


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK,
        ExitCode.FAILED,
        ExitCode.USAGE,
        ExitCode.NOT_FOUND,
        overrides={
            **AMBIGUOUS,
            ExitCode.OK: "cancelled (or already was)",
            ExitCode.FAILED: "the run had finished",
        },
    )
)
def cancel(run_id: RunIdArgument, db: DbOption = None) -> None:
    """Mark a run cancelled in the run store, so it is not resumed.

    This changes the record only; it does not signal a process that may still
    be running the optimization.

    Examples:

        dspex runs cancel 3f2a9c
    """
    try:
        store, run = _get_run(db, run_id)
    except CliError as exc:
        fail(str(exc), exc.code)
    run_id = run.run_id  # the full id, when a prefix was given
    if run.status == "cancelled":
        typer.echo(f"run {run_id} was already cancelled")
        return
    if run.status == "finished":
        fail(f"run {run_id} has finished; there is nothing to cancel", ExitCode.FAILED)
    store.update_run(run_id, status="cancelled")
    typer.echo(f"run {run_id} cancelled (was {run.status})")
