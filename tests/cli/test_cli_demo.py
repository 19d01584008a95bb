"""`dspex demo` as a user runs it: a subprocess that starts its own local Ray.

One run (about 30 s) checks everything the output promises: no Ray token-auth
notice, a line for each start-up step, labelled scores and LM calls, the program
saved under the user data directory (not the current one) and the commands to
run next, which must work against the run the demo recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dspex.optimizers.run_store import RunStore
from dspex.runtime.ray_notices import TOKEN_ENABLED_NOTICE

pytestmark = pytest.mark.slow


@dataclass
class DemoRun:
    cwd: Path
    data_home: Path
    runs_db: Path
    env: dict[str, str]
    stdout: str
    stderr: str


def _env(root: Path, ray_tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(
        HOME=str(root / "home"),
        XDG_DATA_HOME=str(root / "data"),
        DSPEX_RUNS_DB=str(root / "runs.sqlite3"),
        DSPEX_STATE_DIR=str(root / "state"),
        RAY_TMPDIR=ray_tmp,  # short: Ray's socket paths must fit in 107 bytes
        RAY_USAGE_STATS_ENABLED="0",
        COLUMNS="80",
    )
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    root = tmp_path_factory.mktemp("demo")
    (root / "home").mkdir()
    cwd = root / "cwd"
    cwd.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="dspex-demo-")
    env = _env(root, ray_tmp)
    command = [sys.executable, "-m", "dspex.cli", "demo", "--dev-size", "10", "--latency-ms", "0"]
    try:
        done = subprocess.run(
            [*command, "--num-cpus", "2"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    yield DemoRun(cwd, root / "data", root / "runs.sqlite3", env, done.stdout, done.stderr)


def test_the_token_auth_notice_is_gone_but_ray_still_starts(demo_run: DemoRun) -> None:
    assert TOKEN_ENABLED_NOTICE not in demo_run.stderr + demo_run.stdout
    assert "Set RAY_AUTH_MODE=disabled" not in demo_run.stderr


def test_every_start_up_step_is_announced_before_the_first_evaluation(demo_run: DemoRun) -> None:
    lines = demo_run.stderr.splitlines()
    first_evaluation = next(i for i, line in enumerate(lines) if line.startswith("Evaluating "))
    before = "\n".join(lines[:first_evaluation])
    for step in (
        "Starting Ray (local, 2 CPUs) and the dspex supervision tree ...",
        "Starting Ray (local, 2 CPUs) and the dspex supervision tree: done in",
        "Starting the simulated LM as a supervised actor: done in",
        "evaluation worker (EvalWorker): done in",
    ):
        assert step in before


def test_nothing_is_left_in_the_current_directory(demo_run: DemoRun) -> None:
    assert list(demo_run.cwd.iterdir()) == []


def _table_row(stdout: str, program: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.strip().startswith(program))
    return line.strip()[len(program) :].split()


def test_the_table_labels_what_each_number_is(demo_run: DemoRun) -> None:
    out = demo_run.stdout
    assert re.search(r"dev %\s+trial %\s+LM calls\s+LM calls", out)
    assert re.search(r"held-out\s+valset\s+optimize\s+evaluate", out)
    assert "dev %: correct on 10 held-out dev examples, which no optimizer saw." in out
    assert "which chose the program (what `dspex runs list` shows)" in out
    dev, trial, optimize_calls, evaluate_calls, _ = _table_row(out, "CoT + MIPROv2 light")
    assert int(evaluate_calls) == 10  # one call per dev example: the evaluation's alone
    assert int(optimize_calls) > 10
    # The trial score is the one the run store holds (`dspex runs list`).
    [run] = [r for r in RunStore(demo_run.runs_db).list_runs() if r.optimizer == "MIPROv2"]
    assert float(trial) == pytest.approx(run.best_score, abs=0.05)
    assert _table_row(out, "Predict")[1:3] == ["-", "-"]  # not optimized: no trial, no compile
    assert float(dev) >= 0


def test_the_program_is_saved_under_the_user_data_dir_and_the_next_steps_work(
    demo_run: DemoRun,
) -> None:
    saved = list((demo_run.data_home / "dspex" / "demo").glob("*.json"))
    assert len(saved) == 1
    [path] = saved
    run_id = path.stem
    out = demo_run.stdout
    assert f"  {path}" in out
    assert f'  program.load("{path}")' in out
    assert f"dspex runs show {run_id}" in out
    assert "dspex dashboard" in out
    state = json.loads(path.read_text())
    assert "predict" in state and "metadata" in state
    shown = subprocess.run(
        [sys.executable, "-m", "dspex.cli", "runs", "show", run_id],
        env=demo_run.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert run_id in shown.stdout
