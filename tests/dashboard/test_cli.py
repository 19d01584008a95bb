"""`dspex dashboard` as the lead mounts it on the `dspex` command."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dspex.cli.dashboard import EPILOG, dashboard


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("dashboard", epilog=EPILOG)(dashboard)
    app.command("version")(lambda: None)  # a second command keeps `dashboard` a subcommand
    return app


@pytest.fixture
def taken_port() -> Iterator[tuple[str, int]]:
    """A port something else listens on, on all interfaces."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield "0.0.0.0", sock.getsockname()[1]


def test_help_names_the_options_and_the_default_port(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--db", "--address", "--open"):
        assert option in result.output
    assert "8377" in result.output
    assert "Exit codes" in result.output


def test_a_taken_port_is_an_error_with_a_way_out(
    app: typer.Typer, taken_port: tuple[str, int], tmp_path: Path
) -> None:
    _, port = taken_port
    result = CliRunner().invoke(app, ["dashboard", "--port", str(port), "--db", str(tmp_path / "runs.db")])
    assert result.exit_code == 1, result.output
    assert f"cannot serve on 127.0.0.1:{port}" in result.output
    assert "--port 0" in result.output


def test_another_interface_is_served_only_with_a_warning(
    app: typer.Typer, taken_port: tuple[str, int], tmp_path: Path
) -> None:
    host, port = taken_port  # taken, so the command stops right after the warning
    result = CliRunner().invoke(
        app, ["dashboard", "--host", host, "--port", str(port), "--db", str(tmp_path / "runs.db")]
    )
    assert "warning: serving on 0.0.0.0" in result.output
    assert "no login" in result.output
    assert result.exit_code == 1


def test_an_unusable_store_path_is_a_usage_error(app: typer.Typer, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["dashboard", "--db", str(blocker / "runs.db"), "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "cannot open the run store" in result.output
