"""The simulated LM as a subprocess and through the `sim-lm serve` command."""

from __future__ import annotations

import http.client
import json

from typer.testing import CliRunner

from dspex.cli.simlm import app
from dspex.simlm import spawn_sim_lm


def _get(host: str, port: int, path: str) -> tuple[int, object]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_spawned_server_serves_and_stops() -> None:
    proc = spawn_sim_lm(seed=3, faults={"fail_first": 1, "fail_status": 503})
    try:
        assert proc.alive()
        status, models = _get(proc.host, proc.port, "/v1/models")
        assert status == 200 and models["data"][0]["id"] == "sim-lm"  # type: ignore[index]
        body = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}]})
        statuses = []
        for _ in range(2):
            conn = http.client.HTTPConnection(proc.host, proc.port, timeout=5)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            statuses.append(conn.getresponse().status)
            conn.close()
        assert statuses == [503, 200]  # the fault config reached the child
        stats = proc.stats()
        assert stats["by_path"]["/v1/chat/completions"] == 2
        proc.set_faults(outage=True)
        assert _get(proc.host, proc.port, "/v1/models")[0] == 503
        proc.reset_stats()
        assert proc.stats()["total"] == 0
        _get(proc.host, proc.port, "/v1/models")
        assert proc.stats()["by_status"] == {"503": 1}
    finally:
        proc.stop()
    assert not proc.alive()


def test_cli_serve_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--port",
        "--host",
        "--seed",
        "--latency-ms",
        "--jitter-ms",
        "--error-500-rate",
        "--fail-first",
    ):
        assert option in result.output


def test_cli_refuses_a_non_loopback_host() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_cli_rejects_impossible_fault_rates() -> None:
    result = CliRunner().invoke(
        app, ["serve", "--port", "0", "--error-500-rate", "0.7", "--error-429-rate", "0.7"]
    )
    assert result.exit_code == 2
    assert "at most 1" in result.output
