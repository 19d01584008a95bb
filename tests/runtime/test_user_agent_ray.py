"""A user's ReAct agent, run as a script (tools, metric and program in ``__main__``), on
every runtime path: Evaluate on EvalWorkers, Module.batch on EvalWorkers, a compile in a
coordinator, and a served replica. The tools travel with the program (by value) and run
where the agent runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _user_scripts import run_phase

from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "scripts" / "user_agent.py"
DEADLINE = 180.0


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with start_sim_lm(seed=3, latency_ms=5) as server:
        yield server.url


def run(env: dict[str, str], phase: str) -> dict[str, Any]:
    return run_phase(SCRIPT, env, phase, DEADLINE)


def test_the_agent_evaluates_on_eval_workers_with_its_tools(script_env: dict[str, str]) -> None:
    seen = run(script_env, "evaluate")
    assert (seen["n"], seen["errors"]) == (12, 0)
    assert seen["used_tool"] == 12 and seen["score"] > 0  # every answer went through the calculator


def test_a_batch_of_the_agent_runs_on_eval_workers(script_env: dict[str, str]) -> None:
    seen = run(script_env, "batch")
    assert (seen["n"], seen["answered"], seen["used_tool"]) == (12, 12, 12)
    assert seen["local_tool_calls"] == 0  # the tools ran where the agent ran: on the workers


def test_the_agent_compiles_in_a_coordinator(script_env: dict[str, str]) -> None:
    compiled = run(script_env, "compile")
    assert compiled["status"] == "finished"
    assert compiled["demos"]["react"] > 0 and compiled["demos"]["extract.predict"] > 0


def test_a_served_replica_runs_the_agent(script_env: dict[str, str]) -> None:
    served = run(script_env, "serve")
    assert served["used_tool"] and isinstance(served["answer"], int)


def test_a_served_tool_is_called_from_the_agent_on_eval_workers(script_env: dict[str, str]) -> None:
    """The calculator runs in a supervised replica; the agents on the EvalWorkers call it
    through the service's handle (a Tool over it), and every observation is its answer."""
    seen = run(script_env, "served_tool")
    assert (seen["n"], seen["errors"]) == (12, 0)
    assert seen["observed_gold"] == 12 and seen["local_tool_calls"] == 0
