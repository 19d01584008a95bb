"""`dspex cluster start|stop|status`, and the whole flow on a real three-node cluster.

The fast tests use a stand-in process for a node (a sleeping Python whose
command line names the cluster's base dir, as every Ray process of ours does).
The slow test starts a head and two worker nodes with `ray start` through the
real `dspex` command, submits a job that runs tasks on every node, and checks
that `dspex cluster stop` leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspex.cli import app
from dspex.cli.local_cluster import (
    ClusterState,
    NodeProcess,
    load_state,
    pid_alive,
    process_marker,
    processes_mentioning,
    save_state,
    wait_until,
)


def test_status_without_any_cluster_says_how_to_get_one(runner: CliRunner, cli_env: Path) -> None:
    result = runner.invoke(app, ["cluster", "status"])
    assert result.exit_code == 4
    assert "dspex cluster start" in result.stderr


def test_status_of_a_closed_port_is_unreachable(
    runner: CliRunner, cli_env: Path, closed_port: int
) -> None:
    result = runner.invoke(
        app, ["cluster", "status", "--json", "--address", f"http://127.0.0.1:{closed_port}"]
    )
    assert result.exit_code == 4
    assert "RAY_ADDRESS" in result.stderr


def test_stop_with_nothing_started_is_ok(runner: CliRunner, cli_env: Path) -> None:
    result = runner.invoke(app, ["cluster", "stop"])
    assert result.exit_code == 0
    assert "no dspex cluster" in result.stderr


@pytest.fixture
def fake_node(cli_env: Path) -> Iterator[tuple[ClusterState, subprocess.Popen[bytes]]]:
    """A state file whose only node is a live process of ours (a sleeping Python)."""
    base = cli_env / "base"
    base.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", str(base / "head")],
        start_new_session=True,
    )
    state = ClusterState(
        base_dir=str(base),
        gcs_address="127.0.0.1:1",
        dashboard_url=None,
        client_address="ray://127.0.0.1:2",
        auth_mode="token",
        token_origin=None,
        nodes=[
            NodeProcess(
                name="head", pid=proc.pid, temp_dir=str(base / "head"), log=str(base / "head.log")
            )
        ],
    )
    save_state(state)
    yield state, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_start_refuses_while_a_cluster_runs(
    runner: CliRunner, fake_node: tuple[ClusterState, subprocess.Popen[bytes]]
) -> None:
    result = runner.invoke(app, ["cluster", "start"])
    assert result.exit_code == 7
    assert "dspex cluster stop" in result.stderr


def test_status_without_dashboard_reports_processes(
    runner: CliRunner, fake_node: tuple[ClusterState, subprocess.Popen[bytes]]
) -> None:
    result = runner.invoke(app, ["cluster", "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["alive"] == 1 and report["dead"] == 0


def test_stop_ends_exactly_our_processes(
    runner: CliRunner, fake_node: tuple[ClusterState, subprocess.Popen[bytes]]
) -> None:
    state, proc = fake_node
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        result = runner.invoke(app, ["cluster", "stop", "--timeout", "20"])
        assert result.exit_code == 0, result.output
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert processes_mentioning(process_marker(state)) == []
        assert load_state() is None
        assert not Path(state.base_dir).exists()
        assert bystander.poll() is None  # not ours by command line: untouched
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_every_cluster_command_documents_exit_codes(runner: CliRunner) -> None:
    for command in ("start", "stop", "status"):
        result = runner.invoke(app, ["cluster", command, "--help"])
        assert result.exit_code == 0
        assert "Exit codes:" in result.stdout and "Examples" in result.stdout


# --- the real thing ------------------------------------------------------------------------

JOB_SCRIPT = """
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()
alive = [node for node in ray.nodes() if node["Alive"]]
print(f"nodes alive: {len(alive)}", flush=True)


@ray.remote(num_cpus=1)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


pinned = [
    where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
    for node in alive
]
spread = [where.options(scheduling_strategy="SPREAD").remote() for _ in range(6)]
for node_id in ray.get(pinned + spread):
    print(f"task ran on node {node_id}", flush=True)
"""


EVAL_JOB_SCRIPT = """
import asyncio
import threading
import time

import dspex
import dspex.runtime


class Slow(dspex.Module):
    async def aforward(self, question):
        await asyncio.sleep(0.25)
        return dspex.Prediction(answer=question)


dspex.runtime.init()
devset = [dspex.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(600)]
done = {}


def evaluate():
    evaluator = dspex.Evaluate(devset=devset, metric=dspex.answer_exact_match, num_threads=24)
    done["result"] = evaluator(Slow())


worker = threading.Thread(target=evaluate)
worker.start()
time.sleep(1.0)  # part of the workload: let chunks reach every node first
print("evaluation running", flush=True)
worker.join()
result = done["result"]
indices = [int(example.question) for example, _, _ in result.results]
print(
    f"scored {len(result.results)} unique {len(set(indices))} errors {result.n_errors} score {result.score}",
    flush=True,
)
dspex.runtime.shutdown()
"""


def _dspex(
    env: dict[str, str], *args: str, timeout: float = 150.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dspex.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cluster_env(cli_env: Path) -> dict[str, str]:
    """The environment of the real dspex processes: own state dir and own token file.

    HOME stays real (the job's `python` may resolve through it), but with
    RAY_AUTH_TOKEN_PATH set nothing reads or writes ~/.ray.
    """
    token = cli_env / "token"
    token.write_text(os.urandom(16).hex())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH"))
    }
    env.update(
        DSPEX_STATE_DIR=str(cli_env / "state"),
        DSPEX_RUNS_DB=str(cli_env / "runs.sqlite3"),
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        HOME=os.environ.get("HOME", str(Path.home())),
    )
    return env


def _kill_leftovers(pids: list[int], base_dir: str | None) -> None:
    # Only if `dspex cluster stop` failed: end our own process groups by PID.
    for pid in pids:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    if base_dir:
        for pid in processes_mentioning(os.path.join(base_dir, "")):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_three_node_cluster_runs_a_submitted_job(
    cluster_env: dict[str, str], cli_env: Path
) -> None:
    job_dir = cli_env / "job"
    job_dir.mkdir()
    (job_dir / "spread.py").write_text(JOB_SCRIPT)
    (job_dir / "sleep.py").write_text(
        "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"
    )
    (job_dir / "fail.py").write_text(
        "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"
    )
    started = time.monotonic()
    start = _dspex(
        cluster_env,
        "cluster",
        "start",
        "--workers",
        "2",
        "--num-cpus",
        "1",
        "--object-store-mb",
        "100",
        "--json",
    )
    info = json.loads(start.stdout) if start.returncode == 0 else {}
    pids = list(info.get("pids", {}).values())
    try:
        assert start.returncode == 0, start.stderr
        assert len(pids) == 3 and info["auth_mode"] == "token"
        assert info["dashboard_url"].startswith("http://127.0.0.1:")
        assert info["driver_env"]["RAY_AUTH_MODE"] == "token"

        status = _dspex(cluster_env, "cluster", "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["alive"] == 3

        # No RAY_AUTH_MODE in this shell: `dspex status` finds the token as submit does,
        # and the dspex runtime `cluster start` started is up with no driver holding it.
        assert "RAY_AUTH_MODE" not in cluster_env and info["runtime"] is True
        runtime_status = _dspex(cluster_env, "status", "--json", timeout=60.0)
        assert runtime_status.returncode == 0, runtime_status.stderr
        assert "InvalidAuthToken" not in runtime_status.stderr
        assert (
            "dspex.root [supervisor one_for_one] running"
            in json.loads(runtime_status.stdout)["tree_text"]
        )
        assert "starting the dspex runtime" in start.stderr

        # The README's driver step: RAY_ADDRESS only; the example says what it waits for.
        example_dir = Path(__file__).resolve().parents[2] / "examples"
        driver = subprocess.run(
            [sys.executable, str(example_dir / "evaluate_on_cluster.py"), "--size", "60"],
            env={**cluster_env, "RAY_ADDRESS": info["gcs_address"]},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert driver.returncode == 0, driver.stdout + driver.stderr
        for line in (
            "connecting to the Ray cluster",
            "connected: 3 node(s)",
            "starting evaluation workers",
        ):
            assert line in driver.stdout, driver.stdout
        assert "over 60 examples, 0 errors" in driver.stdout

        job = _dspex(
            cluster_env,
            "submit",
            "spread.py",
            "--working-dir",
            str(job_dir),
            "--python",
            sys.executable,
        )
        assert job.returncode == 0, job.stdout + job.stderr
        assert "nodes alive: 3" in job.stdout
        ran_on = set(re.findall(r"task ran on node ([0-9a-f]+)", job.stdout))
        assert len(ran_on) == 3, job.stdout
        assert "SUCCEEDED" in job.stderr

        failing = _dspex(
            cluster_env,
            "submit",
            "fail.py",
            "--working-dir",
            str(job_dir),
            "--python",
            sys.executable,
        )
        assert failing.returncode == 1
        assert "about to fail" in failing.stdout and "exit code 3" in failing.stderr

        queued = _dspex(
            cluster_env,
            "submit",
            "sleep.py",
            "--working-dir",
            str(job_dir),
            "--python",
            sys.executable,
            "--no-wait",
        )
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        stopped = _dspex(cluster_env, "jobs", "stop", job_id)
        assert stopped.returncode == 0, stopped.stderr
        assert "STOPPED" in stopped.stdout
        followed = _dspex(cluster_env, "jobs", "logs", job_id, "--follow")
        assert followed.returncode == 3, followed.stderr
        listed = json.loads(_dspex(cluster_env, "jobs", "list", "--json").stdout)
        assert {job["job_id"]: job["status"] for job in listed}[job_id] == "STOPPED"
        # Ray lists every driver as a job; these are the submitted scripts.
        submitted = [
            job
            for job in listed
            if any(name in str(job["entrypoint"]) for name in ("spread.py", "fail.py", "sleep.py"))
        ]
        assert sorted(job["status"] for job in submitted) == ["FAILED", "STOPPED", "SUCCEEDED"]

        # An evaluation spread over the nodes loses no example when a worker node stops mid-job.
        (job_dir / "evaluate.py").write_text(EVAL_JOB_SCRIPT)
        evaluation = _dspex(
            cluster_env,
            "submit",
            "evaluate.py",
            "--working-dir",
            str(job_dir),
            "--python",
            sys.executable,
            "--no-wait",
        )
        assert evaluation.returncode == 0, evaluation.stderr
        eval_id = evaluation.stdout.strip()

        def running() -> bool:
            logs = _dspex(cluster_env, "jobs", "logs", eval_id)
            return "evaluation running" in logs.stdout

        assert wait_until(running, 120.0)
        victim = next(pid for name, pid in info["pids"].items() if name != "head")
        os.killpg(victim, signal.SIGKILL)
        finished = _dspex(cluster_env, "jobs", "logs", eval_id, "--follow", timeout=240.0)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert "scored 600 unique 600 errors 0 score 100.0" in finished.stdout, finished.stdout

        # The optimization example as a job: its program is in the run store this shell
        # reads, not only in the job's working directory on the cluster.
        example = Path(__file__).resolve().parents[2] / "examples" / "optimize_on_cluster.py"
        (job_dir / "optimize.py").write_text(example.read_text())
        optimized = _dspex(
            cluster_env,
            "submit",
            "optimize.py",
            "--working-dir",
            str(job_dir),
            "--python",
            sys.executable,
            timeout=240.0,
        )
        assert optimized.returncode == 0, optimized.stdout + optimized.stderr
        assert "uploading" in optimized.stderr and "dspex runs list" in optimized.stderr
        found = re.search(r"run (\S+): dev score", optimized.stdout)
        assert found, optimized.stdout
        run_id = found.group(1)
        runs = json.loads(_dspex(cluster_env, "runs", "list", "--json").stdout)
        assert {run["run_id"]: run["status"] for run in runs}[run_id] == "finished"
        program_file = cli_env / "optimized.json"
        shown = _dspex(
            cluster_env, "runs", "show", run_id[:-4], "--save", str(program_file), "--json"
        )
        assert shown.returncode == 0, shown.stderr
        saved = json.loads(program_file.read_text())
        assert saved["solve.predict"]["demos"], saved  # the optimized program, with its demos

        # Both jobs' drivers called dspex.shutdown(): the tree they attached to stays up.
        after = _dspex(cluster_env, "status", "--json", timeout=60.0)
        assert after.returncode == 0, after.stderr
        report = json.loads(after.stdout)
        assert "dspex.optimizers [supervisor one_for_one] running" in report["tree_text"]
        assert any("sim-1" in str(pool.get("model")) for pool in report["pools"]), report
    finally:
        stop = _dspex(cluster_env, "cluster", "stop", "--timeout", "60")
        if stop.returncode != 0 or any(pid_alive(pid) for pid in pids):
            _kill_leftovers(pids, info.get("logs"))
    assert stop.returncode == 0, stop.stderr
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10.0)
    assert processes_mentioning(os.path.join(info["logs"], "")) == []
    print(f"three-node flow took {time.monotonic() - started:.1f}s")
