"""A user's ProgramOfThought and CodeAct, run as a script, on the runtime paths: the
programs travel to EvalWorkers, a coordinator and a served replica, and each starts its
sandbox there (the sandbox processes belong to the process the program runs in)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _sandbox import installed_test_sandbox
from _user_scripts import run_phase

from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "scripts" / "user_coder.py"
DEADLINE = 240.0


@pytest.fixture(scope="module", autouse=True)
def sandbox_installed() -> Iterator[Path]:
    # Fetched once here, before the workers (which find it through DSPEX_SANDBOX_DIR, set
    # for the whole session in tests/conftest.py) start their sandboxes.
    with installed_test_sandbox() as path:
        yield path


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with start_sim_lm(seed=5, latency_ms=5) as server:
        yield server.url


def run(env: dict[str, str], phase: str) -> dict[str, Any]:
    return run_phase(SCRIPT, env, phase, DEADLINE)


def test_program_of_thought_evaluates_on_eval_workers(script_env: dict[str, str]) -> None:
    seen = run(script_env, "evaluate")
    assert (seen["n"], seen["errors"]) == (8, 0)
    assert seen["score"] == 100.0  # every answer computed by code that ran in a sandbox


def test_program_of_thought_compiles_in_a_coordinator(script_env: dict[str, str]) -> None:
    compiled = run(script_env, "compile")
    assert compiled["status"] == "finished"
    assert compiled["demos"]["code_generate.predict"] > 0
    assert compiled["answer"] == compiled["gold"]


def test_a_served_replica_runs_code_act_with_its_tool(script_env: dict[str, str]) -> None:
    served = run(script_env, "serve")
    assert served["answer"] == served["gold"] and served["called_tool"]
    assert served["local_calls"] == 0  # the tool ran in the replica, not in the driver
