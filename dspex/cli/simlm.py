"""`dspex sim-lm ...`: run the simulated LM from the command line.

Mounted by the main CLI as a sub-app; `dspex sim-lm serve --port 8000` serves
until Ctrl-C.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="The simulated LM: an OpenAI/Anthropic-compatible test double.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """The simulated LM: an OpenAI/Anthropic-compatible test double."""


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    host: Annotated[
        str, typer.Option(help="Loopback address to bind; other addresses are refused.")
    ] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed of every answer and fault draw.")] = 0,
    latency_ms: Annotated[float, typer.Option(min=0.0, help="Delay added to every request.")] = 0.0,
    jitter_ms: Annotated[
        float, typer.Option(min=0.0, help="Extra random delay, up to this much.")
    ] = 0.0,
    error_500_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests answered 500.")
    ] = 0.0,
    error_429_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests answered 429.")
    ] = 0.0,
    retry_after: Annotated[
        float, typer.Option(min=0.0, help="Retry-After seconds sent with 429s.")
    ] = 1.0,
    timeout_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests that hang.")
    ] = 0.0,
    hang_seconds: Annotated[
        float, typer.Option(min=0.0, help="How long a hanging request waits.")
    ] = 30.0,
    malformed_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of replies ignoring the format.")
    ] = 0.0,
    truncated_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of replies cut short.")
    ] = 0.0,
    outage_seconds: Annotated[
        float, typer.Option(min=0.0, help="Answer 503 for this long after start.")
    ] = 0.0,
    fail_first: Annotated[
        int, typer.Option(min=0, help="Fail the first k attempts of each request body.")
    ] = 0,
    fail_status: Annotated[
        int, typer.Option(min=400, max=599, help="Status used by --fail-first.")
    ] = 500,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            help="Require this API key (401 otherwise).",
            envvar="DSPEX_SIMLM_API_KEY",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the simulated LM over HTTP until interrupted."""
    from dspex.simlm.core import SimCore
    from dspex.simlm.faults import FaultConfig
    from dspex.simlm.server import check_loopback, serve_forever

    try:
        check_loopback(host)
        faults = FaultConfig(
            error_500_rate=error_500_rate,
            error_429_rate=error_429_rate,
            retry_after=retry_after,
            timeout_rate=timeout_rate,
            hang_seconds=hang_seconds,
            malformed_rate=malformed_rate,
            truncated_rate=truncated_rate,
            outage_seconds=outage_seconds,
            fail_first=fail_first,
            fail_status=fail_status,
        )
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    core = SimCore(
        seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, faults=faults, api_key=api_key
    )

    def announce(bound: int) -> None:
        typer.echo(f"sim-lm listening on http://{host}:{bound}/v1 (Ctrl-C to stop)", err=True)

    serve_forever(core, host=host, port=port, on_ready=announce)
