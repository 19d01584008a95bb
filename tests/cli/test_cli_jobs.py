"""`dspex submit` and `dspex jobs ...`: argument checks, unreachable clusters, token auth.

No Ray cluster here: a closed port stands for "nothing listening" and a fake
dashboard (conftest) for a token-protected one. The real cluster flow is in
test_cli_cluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fakes import FakeDashboard
from typer.testing import CliRunner

from dspex.cli import app


@pytest.fixture
def script(cli_env: Path) -> Path:
    path = cli_env / "proj" / "main.py"
    path.parent.mkdir()
    path.write_text("print('hi')\n")
    return path


def _submit(runner: CliRunner, *args: str) -> object:
    return runner.invoke(app, ["submit", *args])


def test_missing_script_is_a_usage_error(
    runner: CliRunner, cli_env: Path, closed_port: int
) -> None:
    result = _submit(
        runner, str(cli_env / "absent.py"), "--address", f"http://127.0.0.1:{closed_port}"
    )
    assert result.exit_code == 2
    assert "no script" in result.stderr


def test_script_outside_working_dir_is_a_usage_error(
    runner: CliRunner, script: Path, cli_env: Path
) -> None:
    other = cli_env / "other"
    other.mkdir()
    result = _submit(
        runner, str(script), "--working-dir", str(other), "--address", "http://127.0.0.1:1"
    )
    assert result.exit_code == 2
    assert "outside the working directory" in result.stderr


@pytest.mark.parametrize("pair", ["NOEQUALS", "1BAD=x", "=value", "BAD-KEY=x"])
def test_malformed_env_is_a_usage_error(runner: CliRunner, script: Path, pair: str) -> None:
    result = _submit(
        runner,
        str(script),
        "--working-dir",
        str(script.parent),
        "--env",
        pair,
        "--address",
        "http://127.0.0.1:1",
    )
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.stderr


def test_missing_requirements_is_a_usage_error(runner: CliRunner, script: Path) -> None:
    result = _submit(
        runner,
        str(script),
        "--working-dir",
        str(script.parent),
        "--requirements",
        "nope.txt",
        "--address",
        "http://127.0.0.1:1",
    )
    assert result.exit_code == 2
    assert "requirements" in result.stderr


def test_no_address_anywhere_suggests_starting_a_cluster(runner: CliRunner, script: Path) -> None:
    result = _submit(runner, str(script), "--working-dir", str(script.parent))
    assert result.exit_code == 2
    assert "dspex cluster start" in result.stderr


def test_ray_client_address_is_refused_with_the_right_form(runner: CliRunner, script: Path) -> None:
    result = _submit(
        runner,
        str(script),
        "--working-dir",
        str(script.parent),
        "--address",
        "ray://127.0.0.1:10001",
    )
    assert result.exit_code == 2
    assert "http://127.0.0.1:8265" in result.stderr


def test_closed_port_cannot_reach_cluster(
    runner: CliRunner, script: Path, closed_port: int
) -> None:
    result = _submit(
        runner,
        str(script),
        "--working-dir",
        str(script.parent),
        "--address",
        f"127.0.0.1:{closed_port}",
    )
    assert result.exit_code == 4, result.output
    assert f"http://127.0.0.1:{closed_port}" in result.stderr
    assert "dspex cluster start" in result.stderr and "RAY_ADDRESS" in result.stderr


@pytest.mark.parametrize(
    "args", [["jobs", "list"], ["jobs", "logs", "raysubmit_x"], ["jobs", "stop", "raysubmit_x"]]
)
def test_jobs_commands_report_unreachable(
    runner: CliRunner, cli_env: Path, closed_port: int, args: list[str]
) -> None:
    result = runner.invoke(app, [*args, "--address", f"http://127.0.0.1:{closed_port}"])
    assert result.exit_code == 4
    assert "dspex cluster start" in result.stderr


def test_api_server_env_var_is_used_when_no_address(
    runner: CliRunner, cli_env: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{closed_port}")
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 4
    assert str(closed_port) in result.stderr


# --- token authentication against a fake dashboard ------------------------------------------


def test_missing_token_fails_and_says_where_to_get_it(
    runner: CliRunner, cli_env: Path, fake_dashboard: FakeDashboard
) -> None:
    result = runner.invoke(app, ["jobs", "list", "--address", fake_dashboard.url])
    assert result.exit_code == 5
    assert "ray get-auth-token" in result.stderr
    assert "RAY_AUTH_TOKEN_PATH" in result.stderr and "~/.ray/auth_token" in result.stderr


def test_wrong_token_is_rejected(
    runner: CliRunner, cli_env: Path, fake_dashboard: FakeDashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    result = runner.invoke(app, ["jobs", "list", "--address", fake_dashboard.url])
    assert result.exit_code == 5
    assert "rejected" in result.stderr
    assert "not-the-token" not in result.output  # never echo a secret


def test_token_file_from_env_is_sent_as_bearer(
    runner: CliRunner, cli_env: Path, fake_dashboard: FakeDashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = cli_env / "token"
    token_file.write_text(f"{fake_dashboard.token}\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    # A stale RAY_ADDRESS must not override an explicit --address.
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")
    result = runner.invoke(app, ["jobs", "list", "--json", "--address", fake_dashboard.url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert fake_dashboard.seen_auth and set(fake_dashboard.seen_auth) == {
        f"Bearer {fake_dashboard.token}"
    }


def test_default_token_file_is_used(
    runner: CliRunner, cli_env: Path, fake_dashboard: FakeDashboard
) -> None:
    ray_dir = cli_env / "home" / ".ray"
    ray_dir.mkdir()
    (ray_dir / "auth_token").write_text(str(fake_dashboard.token))
    result = runner.invoke(app, ["jobs", "list", "--json", "--address", fake_dashboard.url])
    assert result.exit_code == 0, result.output


def test_no_token_sent_when_cluster_has_auth_off(
    runner: CliRunner, cli_env: Path, fake_dashboard: FakeDashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dashboard.token = None
    monkeypatch.setenv("RAY_AUTH_TOKEN", "would-leak")
    result = runner.invoke(app, ["jobs", "list", "--json", "--address", fake_dashboard.url])
    assert result.exit_code == 0, result.output
    assert set(fake_dashboard.seen_auth) == {""}


def test_help_documents_examples_and_exit_codes(runner: CliRunner) -> None:
    for args in (["submit"], ["jobs", "list"], ["jobs", "logs"], ["jobs", "stop"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0
        assert "Exit codes:" in result.stdout and "Examples" in result.stdout


def test_a_job_on_the_local_dspex_cluster_uses_this_shells_run_store(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job's driver runs on the head node, on this machine: pointed at the store
    # `dspex runs` reads here, its runs and programs are found without copying anything.
    from dspex.cli.jobs import _share_run_store
    from dspex.cli.local_cluster import ClusterState, save_state

    store = cli_env / "mine.sqlite3"
    monkeypatch.setenv("DSPEX_RUNS_DB", str(store))
    save_state(
        ClusterState(
            base_dir=str(cli_env / "base"),
            gcs_address="127.0.0.1:6380",
            dashboard_url="http://127.0.0.1:8265",
            client_address="",
            auth_mode="token",
            token_origin=None,
        )
    )
    local: dict = {"env_vars": {}}
    _share_run_store("http://127.0.0.1:8265", local)
    assert local["env_vars"]["DSPEX_RUNS_DB"] == str(store.resolve())
    remote: dict = {"env_vars": {}}
    _share_run_store("http://10.0.0.5:8265", remote)
    assert "DSPEX_RUNS_DB" not in remote["env_vars"]  # a remote cluster keeps its own store
    chosen: dict = {"env_vars": {"DSPEX_RUNS_DB": "/shared/runs.sqlite3"}}
    _share_run_store("http://127.0.0.1:8265", chosen)
    assert chosen["env_vars"]["DSPEX_RUNS_DB"] == "/shared/runs.sqlite3"  # --env wins
