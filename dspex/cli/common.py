"""What every `dspex` subcommand shares: exit codes, error printing, JSON output.

Exit codes are part of the CLI's contract: scripts branch on them, so they are
one table here and every command's --help repeats the ones it uses.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer

# Defined with every other exception; re-exported here, where commands and tests import it.
from dspex.errors import CliError as CliError


class ExitCode(enum.IntEnum):
    """Process exit codes shared by every dspex subcommand."""

    OK = 0
    FAILED = 1  # the job failed, or the command could not do what was asked
    USAGE = 2  # bad arguments or files (typer/click also use 2 for these)
    STOPPED = 3  # the job was stopped before it finished
    UNREACHABLE = 4  # no Ray cluster answered at the address
    AUTH = 5  # the cluster wants a token we do not have, or rejected ours
    NOT_FOUND = 6  # no such job or run
    CONFLICT = 7  # a dspex cluster is already running from this state dir
    INTERRUPTED = 130  # Ctrl-C, the shell's convention (128 + SIGINT)


# One sentence per code, reused in the epilogs below.
_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "failed",
    ExitCode.USAGE: "usage error (bad option, missing file)",
    ExitCode.STOPPED: "the job was stopped",
    ExitCode.UNREACHABLE: "cannot reach the cluster",
    ExitCode.AUTH: "authentication token missing or rejected",
    ExitCode.NOT_FOUND: "no such job or run",
    ExitCode.CONFLICT: "a dspex cluster is already running",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes_help(*codes: ExitCode, overrides: dict[ExitCode, str] | None = None) -> str:
    """An epilog paragraph listing the exit codes a command uses."""
    meanings = {**_MEANINGS, **(overrides or {})}
    parts = [f"{int(code)} {meanings[code]}" for code in codes]
    return "Exit codes: " + "; ".join(parts) + "."


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print `message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


def note(message: str) -> None:
    """Progress and hints go to stderr, so stdout stays clean for data and logs."""
    typer.echo(message, err=True)


def emit_json(value: Any) -> None:
    """Print `value` as JSON on stdout (non-JSON values, e.g. paths, as strings)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def waiting(message: str) -> Iterator[None]:
    """Say what a command is waiting for, so seconds of silence never look like a hang.

    On a terminal: a spinner on stderr that disappears when the wait is over.
    Otherwise (a pipe, a CI log): the message once, as a line on stderr.
    """
    if sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True).status(message):
            yield
    else:
        note(f"{message} ...")
        yield
