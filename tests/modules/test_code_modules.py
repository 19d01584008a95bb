"""ProgramOfThought and CodeAct: code written by the LM runs in the real sandbox (Deno +
Pyodide), errors go back to the LM for repair, tools run on the host. Against the
simulated LM over HTTP (it writes code for arithmetic questions, sometimes with a typo)
and with scripted replies (DummyLM) for exact paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _sandbox import installed_test_sandbox

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.sandbox import PythonInterpreter
from dspex.simlm import SimLMServer, datasets, start_sim_lm
from dspex.utils import DummyLM


@pytest.fixture(scope="module")
def sandbox_dir() -> Iterator[Path]:
    with installed_test_sandbox() as path:
        yield path


@pytest.fixture(scope="module")
def interpreter(sandbox_dir: Path) -> Iterator[PythonInterpreter]:
    # One warm sandbox for the module; 2 s per execution is plenty for these programs
    # and keeps the timeout paths short.
    with PythonInterpreter(timeout=2.0) as shared:
        yield shared


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=1) as server:
        yield server


@pytest.fixture
def sim_lm(sim: SimLMServer) -> dspex.LM:
    lm = dspex.LM("openai/sim-coder", api_base=sim.url, api_key="local", cache=False)
    dspex.configure(lm=lm)
    return lm


def _prompts_since(start: int) -> list[str]:
    return [str(entry["messages"][-1]["content"]) for entry in list(GLOBAL_HISTORY)[start:]]


# --- ProgramOfThought ----------------------------------------------------------------------


def test_program_of_thought_answers_arithmetic_by_running_code(sim_lm: dspex.LM, interpreter: PythonInterpreter) -> None:
    pot = dspex.ProgramOfThought("question -> answer: int", interpreter=interpreter)
    rows = datasets.load("arithmetic", "dev")[:12]
    start = len(GLOBAL_HISTORY)
    answers = [pot(question=row["question"]).answer for row in rows]
    assert answers == [row["answer"] for row in rows]
    prompts = _prompts_since(start)
    # Some first drafts had a typo: their NameError went back to the LM, which fixed it.
    repairs = [p for p in prompts if "[[ ## error ## ]]" in p]
    assert repairs and all("NameError" in p for p in repairs)
    assert all("code_output" in p for p in prompts if "final_generated_code" in p)


def test_a_submitted_result_reaches_the_answer_step(interpreter: PythonInterpreter) -> None:
    lm = DummyLM(
        [
            {"reasoning": "compute", "generated_code": "```python\ntotal = sum(range(10))\nSUBMIT({'answer': total})\n```"},
            {"reasoning": "the code says 45", "answer": "45"},
        ]
    )
    dspex.configure(lm=lm)
    pot = dspex.ProgramOfThought("question -> answer: int", interpreter=interpreter)
    assert pot(question="Sum 0..9").answer == 45
    answer_step = str(lm.history[-1]["messages"][-1]["content"])
    assert '{"answer": 45}' in answer_step


def test_a_syntax_error_is_repaired_before_anything_runs(interpreter: PythonInterpreter) -> None:
    lm = DummyLM(
        [
            {"reasoning": "r", "generated_code": "```python\nresult = (2 +\n```"},
            {"reasoning": "r", "generated_code": "```python\nresult = 2 + 3\nresult\n```"},
            {"reasoning": "r", "answer": "5"},
        ]
    )
    dspex.configure(lm=lm)
    pot = dspex.ProgramOfThought("question -> answer: int", interpreter=interpreter)
    assert pot(question="2 + 3?").answer == 5
    repair = str(lm.history[1]["messages"][-1]["content"])
    assert "SyntaxError" in repair and "result = (2 +" in repair  # previous_code and error


def test_code_that_never_stops_is_cut_at_the_time_limit_and_reported(
    sim_lm: dspex.LM, interpreter: PythonInterpreter
) -> None:
    pot = dspex.ProgramOfThought("question -> answer: int", max_iters=2, interpreter=interpreter)
    with pytest.raises(dspex.CodeRepairError) as caught:
        pot(question="Count up forever and tell me where you stop")
    assert caught.value.attempts == 2
    assert "did not finish within 2" in caught.value.last_error
    assert pot(question="What is 2 + 2?").answer == 4  # the replaced sandbox works


def test_max_iters_reached_raises_with_the_last_error(sim_lm: dspex.LM, interpreter: PythonInterpreter) -> None:
    pot = dspex.ProgramOfThought("question -> answer: int", max_iters=3, interpreter=interpreter)
    start = len(GLOBAL_HISTORY)
    with pytest.raises(dspex.CodeRepairError, match="failed 3 time") as caught:
        pot(question="An unfixable question: what is 3 + 3?")
    assert "NameError" in caught.value.last_error and "undefined_helper" in caught.value.last_error
    assert isinstance(caught.value, RuntimeError)  # what DSPy raises there
    # one generate, two regenerates, no answer step
    assert len(_prompts_since(start)) == 3


def test_code_cannot_reach_host_files(interpreter: PythonInterpreter, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    lm = DummyLM(
        [
            {"reasoning": "r", "generated_code": f"```python\nopen({str(secret)!r}).read()\n```"},
            {"reasoning": "r", "generated_code": "```python\n'no access'\n```"},
            {"reasoning": "r", "answer": "no access"},
        ]
    )
    dspex.configure(lm=lm)
    assert dspex.ProgramOfThought("question -> answer", interpreter=interpreter)(question="q").answer == "no access"
    repair = str(lm.history[1]["messages"][-1]["content"])
    assert "FileNotFoundError" in repair or "No such file" in repair
    assert "do not read" not in "".join(str(e["messages"]) for e in lm.history)


# --- CodeAct -----------------------------------------------------------------------------

HOST_CALLS: list[tuple[int, int]] = []


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    HOST_CALLS.append((a, b))
    return a + b


def test_code_act_calls_host_tools_and_keeps_variables_between_steps(
    sim_lm: dspex.LM, interpreter: PythonInterpreter
) -> None:
    HOST_CALLS.clear()
    act = dspex.CodeAct("question -> answer: int", tools=[add])
    try:
        result = act(question="What is 17 + 43?")
    finally:
        act.interpreter.shutdown()
    assert result.answer == 60
    trajectory = result.trajectory
    codes = [v for k, v in trajectory.items() if k.startswith("generated_code_")]
    outputs = [v for k, v in trajectory.items() if k.startswith("code_output_")]
    # The tool ran here, on the host, once per step whose code called it (a first draft
    # may have had a typo after the call: its NameError is an observation).
    assert HOST_CALLS == [(17, 43)] * sum("add(a=17, b=43)" in code for code in codes) != []
    assert outputs[-2:] == ["60", "60"]
    # The last step printed a variable an earlier step set.
    assert codes[-1] == "print(result)"


def test_code_act_turns_errors_into_observations_and_stops_at_max_iters(interpreter: PythonInterpreter) -> None:
    def explode(x: int) -> int:
        """Always fails."""
        raise ValueError("the tool is broken")

    steps = [
        {"generated_code": "```python\nexplode(x=1)\n```", "finished": False},
        {"generated_code": "```python\nmissing_function()\n```", "finished": False},
        {"generated_code": "```python\nvalue = (\n```", "finished": False},
    ]
    lm = DummyLM([*steps, {"reasoning": "nothing worked", "answer": "0"}])
    dspex.configure(lm=lm)
    act = dspex.CodeAct("question -> answer: int", tools=[explode], max_iters=3)
    try:
        result = act(question="q")
    finally:
        act.interpreter.shutdown()
    trajectory: dict[str, Any] = result.trajectory
    assert "the tool is broken" in trajectory["observation_0"]
    assert "NameError" in trajectory["observation_1"] and "missing_function" in trajectory["observation_1"]
    assert "could not be read" in trajectory["observation_2"]
    assert result.answer == 0
    assert len(lm.history) == 4  # three steps, then the extraction


def test_code_act_rejects_tool_names_python_cannot_call() -> None:
    with pytest.raises(dspex.ConfigurationError, match="not a Python identifier"):
        dspex.CodeAct("question -> answer", tools=[dspex.Tool(add, name="add-numbers")])
