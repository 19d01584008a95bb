"""`dspex sandbox ...`: set up the Python sandbox behind `dspex.PythonInterpreter`.

`dspex sandbox install` fetches the pinned Pyodide from the npm registry into dspex's
Deno cache once (a machine image, a CI step, a cluster node's setup); after that every
sandbox starts offline. `dspex sandbox check` runs one line of Python in it.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from dspex.cli.common import ExitCode, emit_json, exit_codes_help, fail, waiting

app = typer.Typer(help="The Python sandbox (Deno + Pyodide) of dspex.PythonInterpreter.", no_args_is_help=True)

_CODES = exit_codes_help(
    ExitCode.OK, ExitCode.FAILED, overrides={ExitCode.FAILED: "Deno or Pyodide is missing or does not start"}
)


@app.callback()
def _group() -> None:
    """The Python sandbox (Deno + Pyodide) of dspex.PythonInterpreter."""


@app.command(epilog="Example: DSPEX_SANDBOX_DIR=/opt/dspex-sandbox dspex sandbox install\n\n" + _CODES)
def install(
    json_output: Annotated[bool, typer.Option("--json", help="Print where it went as JSON.")] = False,
) -> None:
    """Fetch Pyodide into dspex's Deno cache (from the npm registry; once)."""
    from dspex.errors import SandboxInstallError
    from dspex.sandbox import install as sandbox_install

    base = sandbox_install.sandbox_dir()
    already = sandbox_install.is_installed(base)
    started = time.monotonic()
    try:
        with waiting(f"fetching Pyodide {sandbox_install.PYODIDE_VERSION} into {base}"):
            where = sandbox_install.install(base)
    except SandboxInstallError as exc:
        fail(str(exc), ExitCode.FAILED)
    facts = {
        "pyodide_version": sandbox_install.PYODIDE_VERSION,
        "path": str(where),
        "deno": sandbox_install.find_deno(),
        "already_installed": already,
        "seconds": round(time.monotonic() - started, 2),
    }
    if json_output:
        emit_json(facts)
    else:
        state = "already installed" if already else f"installed in {facts['seconds']}s"
        typer.echo(f"Pyodide {facts['pyodide_version']} {state}: {where}")


@app.command(epilog=_CODES)
def check(
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Start one sandbox offline (no install) and run a line of Python in it."""
    from dspex.errors import CodeInterpreterError
    from dspex.sandbox import PythonInterpreter

    started = time.monotonic()
    try:
        with PythonInterpreter(auto_install=False) as interpreter:
            version = interpreter.execute("import sys\nsys.version.split()[0]")
    except CodeInterpreterError as exc:
        fail(str(exc), ExitCode.FAILED)
    facts = {"python": version, "seconds": round(time.monotonic() - started, 2)}
    if json_output:
        emit_json(facts)
    else:
        typer.echo(f"sandbox ok: Python {version} in {facts['seconds']}s")
