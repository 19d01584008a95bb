"""Fixtures for the `dspex` CLI tests: an isolated environment, a closed port, a fake dashboard.

Every test runs with its own state dir, run store and home directory, and with
Ray's address and token variables cleared, so nothing reads or writes the
developer's real ~/.ray or cluster state.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cli_fakes import FakeDashboard, dashboard_handler
from typer.testing import CliRunner

_CLEARED = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "DSPEX_RUNS_DB",
)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment for one test; returns its scratch directory."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DSPEX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    return tmp_path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_dashboard() -> Iterator[FakeDashboard]:
    """A fake token-protected dashboard on 127.0.0.1; set `.token = None` to turn auth off."""
    fake = FakeDashboard(token="s3cret-token")
    server = ThreadingHTTPServer(("127.0.0.1", 0), dashboard_handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
