"""`dspex submit` and `dspex jobs list|logs|stop`: driver scripts as Ray jobs.

A thin layer over Ray's JobSubmissionClient. `submit` uploads the working
directory, runs the script with the cluster's Python, streams its output and
exits with the job's outcome, so a shell script or CI step can rely on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    from ray.job_submission import JobSubmissionClient

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STATUS_EXIT = {"SUCCEEDED": ExitCode.OK, "FAILED": ExitCode.FAILED, "STOPPED": ExitCode.STOPPED}
_FOLLOW_CODES = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.USAGE,
    ExitCode.STOPPED,
    ExitCode.UNREACHABLE,
    ExitCode.AUTH,
    ExitCode.NOT_FOUND,
    ExitCode.INTERRUPTED,
)
SUBMIT_EPILOG = exit_codes_help(
    *_FOLLOW_CODES,
    overrides={
        ExitCode.OK: "the job succeeded (or was submitted, with --no-wait)",
        ExitCode.FAILED: "the job failed",
    },
)

AddressOption = Annotated[
    Optional[str],
    typer.Option(
        help="Dashboard/Jobs URL of the cluster, e.g. http://127.0.0.1:8265. Default: "
        "$RAY_API_SERVER_ADDRESS, else the cluster `dspex cluster start` started.",
        show_default=False,
    ),
]

app = typer.Typer(
    help="List, follow and stop Ray jobs.", no_args_is_help=True, rich_markup_mode="rich"
)


@app.callback()
def _group() -> None:
    """List, follow and stop Ray jobs (submit them with `dspex submit`)."""


def register(parent: typer.Typer) -> None:
    """Mount `submit` and the `jobs` group on the main `dspex` app."""
    parent.command("submit", epilog=SUBMIT_EPILOG)(submit)
    parent.add_typer(app, name="jobs", help="List, follow and stop Ray jobs.")


# --- submit ----------------------------------------------------------------------------


def submit(
    script: Annotated[
        Path, typer.Argument(help="The driver script to run on the cluster.", show_default=False)
    ],
    script_args: Annotated[
        Optional[list[str]],
        typer.Argument(help="Arguments for the script (put them after --).", show_default=False),
    ] = None,
    address: AddressOption = None,
    working_dir: Annotated[
        Path, typer.Option(help="Directory uploaded to the cluster; the script must be inside it.")
    ] = Path("."),
    env: Annotated[
        Optional[list[str]],
        typer.Option(
            "--env",
            "-e",
            help="KEY=VALUE set for the job; repeatable. Values are stored with the job and shown "
            "on the dashboard: give API keys to the cluster's nodes instead.",
            show_default=False,
        ),
    ] = None,
    requirements: Annotated[
        Optional[Path],
        typer.Option(
            help="A requirements.txt pip-installs on the cluster for this job.", show_default=False
        ),
    ] = None,
    python: Annotated[
        str, typer.Option(help="Python command on the cluster that runs the script.")
    ] = "python",
    submission_id: Annotated[
        Optional[str],
        typer.Option(help="Job ID to use (default: Ray makes one).", show_default=False),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the job ID and return without waiting.")
    ] = False,
) -> None:
    """Run a driver script on a Ray cluster as a job, stream its output, exit with its outcome.

    The working directory is uploaded, the script runs there with `ray.init()`
    connecting to the cluster, and RAY_USAGE_STATS_ENABLED=0 is set for it.
    When the cluster uses token authentication, the token is taken from
    $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, as Ray does.

    Examples:

        dspex submit optimize.py --address http://127.0.0.1:8265

        dspex submit jobs/eval.py -e DSPEX_LOG_LEVEL=debug --requirements requirements.txt -- --dev-size 200

        JOB=$(dspex submit run.py --no-wait) && dspex jobs logs $JOB --follow
    """
    try:
        entrypoint, runtime_env = _prepare(
            script, script_args or [], working_dir, env or [], requirements, python
        )
        url = _address(address)
        _share_run_store(url, runtime_env)
        client = _client(url)
        with _job_errors(url), waiting(f"uploading {runtime_env['working_dir']} to {url}"):
            job_id = client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id
            )
    except CliError as exc:
        fail(str(exc), exc.code)
    note(f"submitted job {job_id} to {url}")
    if no_wait:
        typer.echo(job_id)
        raise typer.Exit(int(ExitCode.OK))
    note("waiting for the job's driver to start on the cluster; its output follows")
    raise typer.Exit(int(_follow_to_end(client, job_id, url)))


def _prepare(
    script: Path,
    script_args: list[str],
    working_dir: Path,
    env: list[str],
    requirements: Path | None,
    python: str,
) -> tuple[str, dict[str, Any]]:
    """Check the local inputs and build the entrypoint and runtime_env (usage errors exit 2)."""
    if not working_dir.is_dir():
        raise CliError(f"--working-dir {working_dir} is not a directory", ExitCode.USAGE)
    if not script.is_file() and not script.is_absolute() and (working_dir / script).is_file():
        # `--working-dir job/ main.py` means job/main.py, as the entrypoint runs there.
        script = working_dir / script
    if not script.is_file():
        raise CliError(f"no script at {script}", ExitCode.USAGE)
    root = working_dir.resolve()
    try:
        relative = script.resolve().relative_to(root)
    except ValueError:
        raise CliError(
            f"{script} is outside the working directory {root}; only that directory is uploaded. "
            "Pass --working-dir with a directory that contains the script.",
            ExitCode.USAGE,
        ) from None
    runtime_env: dict[str, Any] = {
        "working_dir": str(root),
        # Last, so --env cannot turn usage reporting back on.
        "env_vars": {**parse_env(env), "RAY_USAGE_STATS_ENABLED": "0"},
    }
    if requirements is not None:
        if not requirements.is_file():
            raise CliError(f"no requirements file at {requirements}", ExitCode.USAGE)
        runtime_env["pip"] = str(requirements.resolve())
    entrypoint = shlex.join([python, relative.as_posix(), *script_args])
    return entrypoint, runtime_env


def _share_run_store(url: str, runtime_env: dict[str, Any]) -> None:
    """Point a job on this machine's `dspex cluster start` cluster at this shell's run store.

    The job's driver runs on the head node, here: with the same DSPEX_RUNS_DB its
    runs (and their optimized programs) show up in `dspex runs` in this shell,
    whatever the nodes' environment says. A remote cluster keeps its own store.
    """
    from dspex.cli.local_cluster import load_state
    from dspex.optimizers.run_store import default_store_path

    try:
        state = load_state()
    except CliError:
        return
    if state is None or state.dashboard_url is None or url != state.dashboard_url.rstrip("/"):
        return
    runtime_env["env_vars"].setdefault("DSPEX_RUNS_DB", str(default_store_path().resolve()))


def parse_env(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings into a dict; a malformed pair is a usage error."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise CliError(
                f"--env {pair!r} is not KEY=VALUE (KEY: letters, digits, underscores)",
                ExitCode.USAGE,
            )
        parsed[key] = value
    return parsed


def _address(explicit: str | None) -> str:
    from dspex.cli.cluster_access import resolve_address
    from dspex.cli.local_cluster import load_state

    try:
        state = load_state()
    except CliError:
        state = None  # a damaged state file must not block talking to an explicit address
    return resolve_address(explicit, state.dashboard_url if state else None)


def _client(url: str) -> JobSubmissionClient:
    from dspex.cli.cluster_access import job_client

    return job_client(url)


@contextmanager
def _job_errors(url: str, job_id: str | None = None) -> Iterator[None]:
    """Translate what the Jobs SDK raises into CliErrors with an exit code."""
    import requests
    from ray.exceptions import AuthenticationError

    from dspex.cli.cluster_access import NO_CLUSTER_HINT
    from dspex.runtime.auth_token import GET_TOKEN_HINT

    try:
        yield
    except AuthenticationError as exc:
        raise CliError(f"{exc} {GET_TOKEN_HINT}", ExitCode.AUTH) from exc
    except (requests.ConnectionError, ConnectionError) as exc:
        raise CliError(
            f"lost the connection to {url} ({exc}). {NO_CLUSTER_HINT}", ExitCode.UNREACHABLE
        ) from exc
    except RuntimeError as exc:
        if job_id is not None and "status code 404" in str(exc):
            raise CliError(
                f"no job {job_id!r} at {url}; `dspex jobs list` shows the jobs there",
                ExitCode.NOT_FOUND,
            ) from exc
        raise CliError(f"the Jobs API at {url} failed: {exc}", ExitCode.FAILED) from exc
    except ValueError as exc:
        # runtime_env validation (e.g. an unreadable requirements file) raises ValueError.
        raise CliError(str(exc), ExitCode.USAGE) from exc


# --- following a job ---------------------------------------------------------------------


def _follow_to_end(client: JobSubmissionClient, job_id: str, url: str) -> ExitCode:
    """Stream the job's output to stdout until it ends; its status becomes the exit code."""
    try:
        with _job_errors(url, job_id):
            printed = _stream_logs(client, job_id)
            status = _wait_terminal(client, job_id)
            _print_missed_logs(client, job_id, printed)
    except CliError as exc:
        fail(str(exc), exc.code)
    except KeyboardInterrupt:
        note(
            f"stopped following; job {job_id} keeps running. `dspex jobs logs {job_id} --follow` resumes, `dspex jobs stop {job_id}` stops it."
        )
        return ExitCode.INTERRUPTED
    return _report_status(client, job_id, status)


def _stream_logs(client: JobSubmissionClient, job_id: str) -> int:
    """Print log chunks as they come; returns how many characters were printed."""

    async def pump() -> int:
        printed = 0
        try:
            async for chunk in client.tail_job_logs(job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()
                printed += len(chunk)
        except RuntimeError as exc:
            # The websocket can drop (e.g. the head restarts its dashboard); the
            # status poll and the catch-up below still finish the job's story.
            if "status code 404" in str(exc):
                raise
            note(f"log stream interrupted ({exc}); waiting for the job to end")
        return printed

    return asyncio.run(pump())


def _wait_terminal(client: JobSubmissionClient, job_id: str, timeout: float | None = None) -> str:
    """Poll the job's status until it is final (the log stream ends slightly earlier)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = str(client.get_job_status(job_id))
        if status in _STATUS_EXIT:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            return status
        time.sleep(0.5)


def _print_missed_logs(client: JobSubmissionClient, job_id: str, printed: int) -> None:
    logs = client.get_job_logs(job_id)
    if len(logs) > printed:
        sys.stdout.write(logs[printed:])
        sys.stdout.flush()


def _report_status(client: JobSubmissionClient, job_id: str, status: str) -> ExitCode:
    if status != "SUCCEEDED":
        # Ray appends the log tail to the message; the logs were printed already.
        message = (client.get_job_info(job_id).message or "").split(", last available logs")[0]
        note(f"job {job_id} {status}" + (f": {message}" if message else ""))
    else:
        note(f"job {job_id} SUCCEEDED")
        # Files the job wrote stay in its working directory on the cluster; runs do not.
        note(
            "optimization runs of the job are in the run store: `dspex runs list`, then "
            "`dspex runs show RUN_ID --save program.json` writes a run's program"
        )
    return _STATUS_EXIT.get(status, ExitCode.FAILED)


# --- jobs list | logs | stop -------------------------------------------------------------


@app.command(
    "list", epilog=exit_codes_help(ExitCode.OK, ExitCode.USAGE, ExitCode.UNREACHABLE, ExitCode.AUTH)
)
def list_jobs(
    address: AddressOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """List the cluster's jobs, newest first.

    Examples:

        dspex jobs list

        dspex jobs list --address http://127.0.0.1:8265 --json
    """
    try:
        url = _address(address)
        client = _client(url)
        with _job_errors(url):
            jobs = [_job_row(job) for job in client.list_jobs()]
    except CliError as exc:
        fail(str(exc), exc.code)
    jobs.sort(key=lambda job: job["start_time"] or 0, reverse=True)
    if json_output:
        emit_json(jobs)
    else:
        _print_jobs(jobs)


def _job_row(job: Any) -> dict[str, Any]:
    return {
        "job_id": job.submission_id or job.job_id,
        "status": str(job.status),
        "entrypoint": job.entrypoint,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "message": job.message,
    }


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not jobs:
        typer.echo("no jobs")
        return
    table = Table()
    for column in ("job", "status", "started", "seconds", "entrypoint"):
        table.add_column(column)
    for job in jobs:
        start, end = job["start_time"], job["end_time"]
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000)) if start else "-"
        seconds = f"{(end - start) / 1000:.1f}" if start and end else "-"
        entrypoint = " ".join(str(job["entrypoint"]).split())
        table.add_row(job["job_id"], job["status"], started, seconds, entrypoint[:60])
    Console().print(table)


@app.command(
    epilog=exit_codes_help(
        *_FOLLOW_CODES,
        overrides={
            ExitCode.OK: "logs printed (with --follow: the job succeeded)",
            ExitCode.FAILED: "the job failed (--follow)",
        },
    )
)
def logs(
    job_id: Annotated[
        str, typer.Argument(help="The job's ID (from `dspex submit` or `dspex jobs list`).")
    ],
    address: AddressOption = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing until the job ends; exit with its outcome."
        ),
    ] = False,
) -> None:
    """Print a job's output; with --follow, stream it until the job ends.

    Examples:

        dspex jobs logs raysubmit_XYZ

        dspex jobs logs raysubmit_XYZ --follow
    """
    try:
        url = _address(address)
        client = _client(url)
        with _job_errors(url, job_id):
            client.get_job_info(job_id)
            if not follow:
                sys.stdout.write(client.get_job_logs(job_id))
                sys.stdout.flush()
    except CliError as exc:
        fail(str(exc), exc.code)
    if follow:
        raise typer.Exit(int(_follow_to_end(client, job_id, url)))


@app.command(
    epilog=exit_codes_help(
        ExitCode.OK,
        ExitCode.FAILED,
        ExitCode.USAGE,
        ExitCode.UNREACHABLE,
        ExitCode.AUTH,
        ExitCode.NOT_FOUND,
        overrides={
            ExitCode.OK: "the job is stopped or had already ended",
            ExitCode.FAILED: "still running after --timeout",
        },
    )
)
def stop(
    job_id: Annotated[str, typer.Argument(help="The job's ID.")],
    address: AddressOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until the job has actually stopped.")] = True,
    timeout: Annotated[float, typer.Option(min=0.0, help="Seconds to wait with --wait.")] = 60.0,
) -> None:
    """Stop a running job (Ray sends its driver SIGTERM, then SIGKILL).

    Examples:

        dspex jobs stop raysubmit_XYZ

        dspex jobs stop raysubmit_XYZ --no-wait
    """
    try:
        url = _address(address)
        client = _client(url)
        with _job_errors(url, job_id):
            client.get_job_info(job_id)
            stopping = client.stop_job(job_id)
            status = (
                _wait_terminal(client, job_id, timeout)
                if wait
                else str(client.get_job_status(job_id))
            )
    except CliError as exc:
        fail(str(exc), exc.code)
    if not stopping:
        typer.echo(f"job {job_id} had already ended: {status}")
    else:
        typer.echo(f"job {job_id}: {status}")
    if wait and status not in _STATUS_EXIT:
        fail(f"job {job_id} is still {status} after {timeout:g}s", ExitCode.FAILED)
