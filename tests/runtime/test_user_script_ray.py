"""A user's script, run as a script: its Signature, pydantic type, Module and metric all
live in ``__main__``, so Ray ships them to workers by value (cloudpickle). Every runtime
path must take them: Evaluate on EvalWorkers, compile in a coordinator (killed mid-run,
restarted, and attached to again by a new driver), and a served replica.

The script (tests/runtime/scripts/user_program.py) attaches to the session's Ray as a
second driver; this test process owns the tree and the simulated LM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex.optimizers.run_store import RunStore
from dspex.runtime.coordinator import coordinator_name, count_steps
from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "scripts" / "user_program.py"
DEADLINE = 120.0


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with start_sim_lm(seed=3, latency_ms=20) as server:
        yield server.url


def start(env: dict[str, str], phase: str, run_id: str = "-") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), phase, run_id],
        env=env,
        cwd=SCRIPT.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-4000:]
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-2000:] + stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def run(env: dict[str, str], phase: str, run_id: str = "-") -> dict[str, Any]:
    return result_of(start(env, phase, run_id))


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_evaluate_on_eval_workers_scores_every_example(script_env: dict[str, str]) -> None:
    seen = run(script_env, "evaluate")
    assert (seen["n"], seen["errors"]) == (16, 0)
    assert seen["score"] > 0  # the metric's isinstance(Verdict) held on the workers


def test_compile_in_a_killed_coordinator_resumes_and_a_new_driver_gets_its_program(
    script_env: dict[str, str],
) -> None:
    import ray

    from dspex.runtime.names import NAMESPACE

    store = RunStore(script_env["DSPEX_RUNS_DB"])
    driver = start(script_env, "compile", "user-run")

    def coordinator() -> Any:
        try:
            return ray.get_actor(coordinator_name("user-run"), namespace=NAMESPACE)
        except ValueError:
            return None

    wait_for(lambda: count_steps(store, "user-run") >= 2, "two checkpoints of the run")
    victim = wait_for(coordinator, "the run's coordinator")
    ray.kill(victim)  # the restarted coordinator rebuilds the job (and its __main__ classes)
    compiled = result_of(driver)
    assert compiled["status"] == "finished"
    assert compiled["verdict_type"] == "Verdict"
    assert sum(compiled["demos"].values()) > 0
    restarted = coordinator()
    assert restarted is None or restarted._actor_id != victim._actor_id

    again = run(script_env, "resume", "user-run")
    assert again["state"] == compiled["state"]  # the stored program, not a new search
    assert again["status"] == "finished"


def test_a_served_replica_answers_with_the_users_types(script_env: dict[str, str]) -> None:
    served = run(script_env, "serve", uuid.uuid4().hex[:6])
    assert isinstance(served["answer"], int)
    assert served["verdict"] == "Verdict"
