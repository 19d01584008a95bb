"""The ``dspex`` command.

Built with typer (a well-kept Click layer: --help with examples, shell
completion and typed options for free). Subcommands import their machinery
lazily so ``dspex --help`` stays instant.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

# Nothing dspex starts may phone home (see DESIGN.md).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

app = typer.Typer(
    name="dspex",
    help="Program language models declaratively and optimize them at scale on Ray.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _mount_sim_lm() -> None:
    from dspex.cli.simlm import app as sim_lm_app

    app.add_typer(sim_lm_app, name="sim-lm", help="Run the built-in simulated LM (an OpenAI-compatible server).")


_mount_sim_lm()


def _mount_sandbox() -> None:
    from dspex.cli.sandbox import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox", help="Install and check the Python sandbox (Deno + Pyodide).")


_mount_sandbox()


def _mount_cluster_tools() -> None:
    from dspex.cli import cluster as cli_cluster
    from dspex.cli import jobs as cli_jobs
    from dspex.cli import runs as cli_runs

    app.add_typer(cli_cluster.app, name="cluster", help="Start, stop and inspect a local multi-node Ray cluster.")
    cli_jobs.register(app)  # `dspex submit` and the `dspex jobs` group
    app.add_typer(cli_runs.app, name="runs", help="Inspect, resume and cancel optimization runs.")


_mount_cluster_tools()


def _mount_dashboard() -> None:
    from dspex.cli.dashboard import EPILOG, dashboard

    app.command("dashboard", epilog=EPILOG)(dashboard)


_mount_dashboard()


def _mount_status() -> None:
    from dspex.cli.status import EPILOG, status

    app.command("status", epilog=EPILOG)(status)


_mount_status()


def _mount_serve() -> None:
    from dspex.cli.serve import EPILOG, serve

    app.command("serve", epilog=EPILOG)(serve)


_mount_serve()


@app.command()
def demo(
    lm: Annotated[
        str | None,
        typer.Option(help="Model to use instead of the simulated LM, e.g. openai/gpt-4o-mini (needs its API key)."),
    ] = None,
    api_base: Annotated[str | None, typer.Option(help="API base URL for --lm.")] = None,
    task: Annotated[str, typer.Option(help="Bundled task to run on.")] = "arithmetic",
    dev_size: Annotated[int, typer.Option(min=10, help="Dev examples to evaluate on.")] = 100,
    latency_ms: Annotated[float, typer.Option(min=0, help="Simulated LM latency per request.")] = 50.0,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "--out",
            "-o",
            help="Where to save the optimized program's state (JSON). "
            "Default: <user data dir>/dspex/cli/demo/RUN_ID.json, never the current directory.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Run on a local Ray runtime (default) or in-process.")] = True,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
) -> None:
    """Evaluate and optimize a small program on a bundled task.

    Runs against the built-in simulated LM unless --lm names a real model.

    Examples:

        dspex demo

        dspex demo --lm openai/gpt-4o-mini --dev-size 50

        dspex demo --out ./program.json --json
    """
    from dspex.cli.demo import run_demo

    code = run_demo(
        lm_name=lm,
        api_base=api_base,
        task=task,
        dev_size=dev_size,
        latency_ms=latency_ms,
        output=output,
        json_output=json_output,
        use_ray=ray,
        num_cpus=num_cpus,
    )
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the dspex version."""
    from dspex import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
