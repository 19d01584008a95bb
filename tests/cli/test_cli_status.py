"""`dspex status` against a cluster that wants a Ray auth token it was not given.

Ray's GCS is a gRPC server; the stand-in here answers the one call dspex's probe
(and Ray's own client, first) makes, ``GetClusterId``, with Ray's
``UNAUTHENTICATED`` unless the bearer token matches. The real cluster is
exercised in test_cli_cluster.py's three-node test, which runs `dspex status`
without RAY_AUTH_MODE exported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from dspex import runtime
from dspex.cli.local_cluster import ClusterState, save_state

TOKEN = "the-clusters-token"


class _FakeGcs(grpc.GenericRpcHandler):
    def __init__(self, *, requires_token: bool = True) -> None:
        self.requires_token = requires_token

    def service(self, call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if call_details.method != "/ray.rpc.NodeInfoGcsService/GetClusterId":
            return None

        def get_cluster_id(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata())
            if self.requires_token and metadata.get("authorization") != f"Bearer {TOKEN}":
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "InvalidAuthToken: Authentication token is missing or incorrect",
                )
            return b""

        return grpc.unary_unary_rpc_method_handler(get_cluster_id)


def _serve_gcs(handler: _FakeGcs) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def gcs_address() -> Iterator[str]:
    yield from _serve_gcs(_FakeGcs())


@pytest.fixture
def open_gcs_address() -> Iterator[str]:
    yield from _serve_gcs(_FakeGcs(requires_token=False))


@pytest.fixture
def no_auth_mode(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # setenv first, so the RAY_AUTH_MODE the code under test sets is undone afterwards.
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    monkeypatch.delenv("RAY_AUTH_MODE")
    return cli_env


def _status_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`dspex status` in its own process, as a user runs it: this test process may
    already hold a Ray connection (the session's cluster), which status would reuse."""
    return subprocess.run(
        [sys.executable, "-m", "dspex.cli", "status", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_without_a_token_fails_fast_and_says_what_to_export(
    no_auth_mode: Path, gcs_address: str
) -> None:
    result = _status_command("--address", gcs_address)
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"connecting to the Ray cluster at {gcs_address}" in result.stderr
    assert "requires an auth token and none was found" in result.stderr
    assert "RAY_AUTH_TOKEN_PATH=" in result.stderr and "ray get-auth-token" in result.stderr


def test_status_with_another_clusters_token_says_it_was_rejected(
    no_auth_mode: Path, gcs_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = no_auth_mode / "wrong-token"
    wrong.write_text("not-this-clusters-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(wrong))
    result = _status_command("--address", gcs_address)
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"rejected the auth token from {wrong}" in result.stderr
    assert "not-this-clusters-token" not in result.stdout + result.stderr  # the value is never printed


def test_status_of_a_dspex_cluster_names_the_token_file_to_export(
    no_auth_mode: Path, gcs_address: str
) -> None:
    token_file = no_auth_mode / "cluster-token"
    token_file.write_text(TOKEN)
    save_state(
        ClusterState(
            base_dir=str(no_auth_mode / "base"),
            gcs_address=gcs_address,
            dashboard_url=None,
            client_address="",
            auth_mode="token",
            token_origin=f"{token_file} ($RAY_AUTH_TOKEN_PATH)",
        )
    )
    result = _status_command()  # the address comes from the cluster's state
    assert result.returncode == 5, result.stdout + result.stderr
    assert f"export RAY_AUTH_TOKEN_PATH={token_file}" in result.stderr


def _driver(
    env: dict[str, str], address: str, *, import_ray_first: bool
) -> subprocess.CompletedProcess[str]:
    """A fresh Python process (Ray fixes its auth mode when it is imported) that probes."""
    code = (
        ("import ray\n" if import_ray_first else "")
        + "from dspex import runtime\n"
        + f"runtime._use_token_if_required({address!r})\n"
        + "import ray\n"
        + f"runtime._check_auth({address!r})\n"
        + "print('accepted')\n"
    )
    # Run outside any checkout, so `dspex` comes from PYTHONPATH like the caller's.
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("source", ["env", "path", "home"])
def test_a_driver_sends_the_token_ray_would_find_without_ray_auth_mode(
    no_auth_mode: Path, gcs_address: str, source: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    if source == "env":
        env["RAY_AUTH_TOKEN"] = TOKEN
    elif source == "path":
        (no_auth_mode / "tok").write_text(TOKEN + "\n")
        env["RAY_AUTH_TOKEN_PATH"] = str(no_auth_mode / "tok")
    else:
        (Path(env["HOME"]) / ".ray").mkdir()
        (Path(env["HOME"]) / ".ray" / "auth_token").write_text(TOKEN)
    result = _driver(env, gcs_address, import_ray_first=False)
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stdout


def test_a_driver_that_imported_ray_too_early_is_told_to_export_ray_auth_mode(
    no_auth_mode: Path, gcs_address: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN"] = TOKEN
    result = _driver(env, gcs_address, import_ray_first=True)
    assert result.returncode != 0
    assert "ClusterAuthError" in result.stderr
    assert "Export RAY_AUTH_MODE=token before starting Python" in result.stderr


def test_the_probe_reports_a_closed_port_as_unreachable(
    no_auth_mode: Path, closed_port: int
) -> None:
    with pytest.raises(runtime.ClusterUnreachableError):
        runtime._check_auth(f"127.0.0.1:{closed_port}")


def test_a_token_lying_around_is_not_sent_to_a_cluster_without_auth(
    no_auth_mode: Path, open_gcs_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Token mode against such a cluster makes Ray kill every actor the driver starts.
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    runtime._use_token_if_required(open_gcs_address)
    assert "RAY_AUTH_MODE" not in os.environ
