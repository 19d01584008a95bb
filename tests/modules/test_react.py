"""`dspex.ReAct` against the simulated LM over real HTTP on 127.0.0.1: the tool loop,
the trajectory, every bad path turned into an observation, max_iters, context-window
truncation, and a BootstrapFewShot compile of a ReAct program."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.adapters.chat import ChatAdapter
from dspex.errors import ConfigurationError, ContextWindowExceededError
from dspex.simlm import SimLMServer, start_sim_lm
from dspex.simlm.core import tokens

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Peru": "Lima"}
#: for each call of `calculate`: was an event loop running in the calling thread?
LOOP_IN_TOOL_THREAD: list[bool] = []


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression with + - * / and parentheses."""
    try:
        asyncio.get_running_loop()
        LOOP_IN_TOOL_THREAD.append(True)
    except RuntimeError:
        LOOP_IN_TOOL_THREAD.append(False)
    if not set(expression) <= set("0123456789+-*/(). "):
        raise ValueError(f"not arithmetic: {expression!r}")
    # Safe here: the check above allows digits and operators only.
    return eval(expression, {"__builtins__": {}})


async def lookup_capital(country: str) -> str:
    """The capital city of a country."""
    await asyncio.sleep(0)
    return CAPITALS[country]


def square(n: int) -> int:
    """Square a whole number."""
    return n * n


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=1) as server:
        yield server


pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test


@pytest.fixture
def lm(sim: SimLMServer) -> Iterator[dspex.LM]:
    model = dspex.LM("openai/sim-agent", api_base=sim.url, api_key="k", num_retries=0)
    with dspex.context(lm=model):
        yield model


def _agent(**kwargs: Any) -> dspex.ReAct:
    return dspex.ReAct("question -> answer", tools=[calculate, lookup_capital, square], **kwargs)


def test_agent_calls_a_tool_then_finishes_and_answers_from_the_observation(lm: dspex.LM) -> None:
    LOOP_IN_TOOL_THREAD.clear()
    prediction = _agent()(question="What is 12 * (3 + 4)?")
    assert prediction.answer == "84"
    assert prediction.trajectory == {
        "thought_0": prediction.trajectory["thought_0"],
        "tool_name_0": "calculate",
        "tool_args_0": {"expression": "12 * (3 + 4)"},
        "observation_0": 84,
        "thought_1": prediction.trajectory["thought_1"],
        "tool_name_1": "finish",
        "tool_args_1": {},
        "observation_1": "Completed.",
    }
    assert prediction.reasoning
    # A sync tool runs in a worker thread, so it never blocks the event loop.
    assert LOOP_IN_TOOL_THREAD == [False]


def test_async_tool_is_awaited_and_acall_works(lm: dspex.LM) -> None:
    prediction = asyncio.run(_agent().acall(question="What is the capital of Japan?"))
    assert prediction.answer == "Tokyo"
    assert prediction.trajectory["tool_args_0"] == {"country": "Japan"}


def test_unknown_tool_name_becomes_an_observation_and_the_loop_goes_on(lm: dspex.LM) -> None:
    prediction = _agent()(question="Please use the `weather` tool for Oslo.")
    trajectory = prediction.trajectory
    assert trajectory["tool_name_0"] == "weather"
    assert trajectory["observation_0"].startswith("Unknown tool 'weather': choose one of calculate,")
    assert trajectory["tool_name_1"] == "finish"


def test_bad_tool_arguments_become_an_observation(lm: dspex.LM) -> None:
    prediction = _agent()(question="What is the square of seven?")
    observation = prediction.trajectory["observation_0"]
    assert observation.startswith("Execution error in square: bad arguments for tool 'square'")
    assert "argument 'n'='seven'" in observation
    assert prediction.trajectory["tool_name_1"] == "finish"


def test_a_tool_raising_becomes_an_observation(lm: dspex.LM) -> None:
    prediction = _agent()(question="What is the capital of Spain?")
    assert prediction.trajectory["observation_0"] == "Execution error in lookup_capital: KeyError: 'Spain'"
    assert prediction.trajectory["tool_name_1"] == "finish"


def test_max_iters_stops_the_loop_and_the_outputs_are_still_extracted(lm: dspex.LM) -> None:
    prediction = _agent(max_iters=1)(question="What is the capital of Italy?")
    assert list(prediction.trajectory) == ["thought_0", "tool_name_0", "tool_args_0", "observation_0"]
    assert prediction.answer == "Rome"
    # max_iters given per call wins over the module's.
    assert _agent()(question="What is 2 + 2?", max_iters=0).trajectory == {}


def test_tools_named_finish_or_twice_are_refused() -> None:
    def finish() -> str:
        """Not allowed."""
        return ""

    with pytest.raises(ConfigurationError, match="may not be named 'finish'"):
        dspex.ReAct("question -> answer", tools=[finish])
    with pytest.raises(ConfigurationError, match="two ReAct tools are named 'square'"):
        dspex.ReAct("question -> answer", tools=[square, dspex.Tool(square)])


def test_signature_fields_and_predictors_optimizers_see() -> None:
    agent = _agent()
    step = agent.react.signature
    assert list(step.input_fields) == ["question", "trajectory"]
    assert list(step.output_fields) == ["next_thought", "next_tool_name", "next_tool_args"]
    assert "(1) calculate:" in step.instructions and "finish" in step.instructions
    assert list(agent.extract.predict.signature.fields) == ["question", "trajectory", "reasoning", "answer"]
    assert [name for name, _ in agent.named_predictors()] == ["react", "extract.predict"]


# --- context window -------------------------------------------------------------------


def _prompt_tokens(predictor: dspex.Predict, **inputs: Any) -> int:
    messages = ChatAdapter().format(predictor.signature, predictor.demos, inputs)
    return sum(tokens(m["content"]) + 3 for m in messages)


def _two_steps(long_text: str) -> dict[str, Any]:
    return {
        "thought_0": "look it up",
        "tool_name_0": "lookup_capital",
        "tool_args_0": {"country": "Peru"},
        "observation_0": long_text,
        "thought_1": "found it",
        "tool_name_1": "lookup_capital",
        "tool_args_1": {"country": "Peru"},
        "observation_1": "Lima",
    }


def test_oldest_steps_are_dropped_when_the_prompt_overflows(lm: dspex.LM, sim: SimLMServer) -> None:
    agent = _agent()
    question = "What is the capital of Peru?"
    trajectory = _two_steps("filler " * 300)
    full = _prompt_tokens(agent.extract.predict, question=question, trajectory=agent._format_trajectory(trajectory))
    sim.set_faults({"context_window_tokens": full - 1})
    try:
        prediction = asyncio.run(agent._call_truncating(agent.extract, trajectory, {"question": question}))
    finally:
        sim.set_faults({})
    assert list(trajectory) == ["thought_1", "tool_name_1", "tool_args_1", "observation_1"]
    assert prediction.answer == "Lima"


def test_a_one_step_trajectory_that_overflows_ends_the_loop(lm: dspex.LM, sim: SimLMServer) -> None:
    def atlas(country: str) -> str:
        """Everything about a country's capital."""
        return "Lima " + "is the capital " * 150

    agent = dspex.ReAct("question -> answer", tools=[atlas])
    question = "What does the atlas say about Peru?"
    step = {"thought_0": "t", "tool_name_0": "atlas", "tool_args_0": {"country": "Peru"}, "observation_0": atlas("Peru")}
    text = agent._format_trajectory(step)
    react_size = _prompt_tokens(agent.react, question=question, trajectory=text)
    extract_size = _prompt_tokens(agent.extract.predict, question=question, trajectory=text)
    assert extract_size < react_size  # the step prompt also lists the tools
    sim.set_faults({"context_window_tokens": react_size - 1})
    try:
        prediction = agent(question=question)
        # The extraction fits; a one-step trajectory cannot shrink below it, so an
        # extraction that does not fit either is the error.
        sim.set_faults({"context_window_tokens": extract_size - 1})
        with pytest.raises(ContextWindowExceededError, match="at most one step"):
            agent(question=question + " ")
    finally:
        sim.set_faults({})
    assert list(prediction.trajectory) == ["thought_0", "tool_name_0", "tool_args_0", "observation_0"]
    assert prediction.answer.startswith("Lima")


def test_truncate_trajectory_refuses_a_single_step() -> None:
    agent = _agent()
    with pytest.raises(ContextWindowExceededError, match="at most one step"):
        agent.truncate_trajectory({"thought_0": "", "tool_name_0": "", "tool_args_0": {}, "observation_0": ""})


# --- optimizing -----------------------------------------------------------------------


def test_bootstrap_few_shot_compiles_a_react_program(lm: dspex.LM) -> None:
    trainset = [
        dspex.Example(question="What is 6 * 7?", answer="42").with_inputs("question"),
        dspex.Example(question="What is the capital of France?", answer="Paris").with_inputs("question"),
        dspex.Example(question="What is 100 - 1?", answer="99").with_inputs("question"),
    ]
    student = _agent()
    compiled = dspex.BootstrapFewShot(
        metric=dspex.answer_exact_match, max_bootstrapped_demos=2, max_labeled_demos=0
    ).compile(
        student, trainset=trainset
    )
    assert compiled is not student and student.react.demos == []
    react_demos, extract_demos = compiled.react.demos, compiled.extract.predict.demos
    assert len(react_demos) == len(extract_demos) == 2
    assert {"question", "trajectory", "next_tool_name", "next_tool_args"} <= set(react_demos[0].keys())
    assert "answer" in extract_demos[0] and "trajectory" in extract_demos[0]
    # The compiled program still runs, with its demos in the prompt.
    assert compiled(question="What is the capital of Peru?").answer == "Lima"
    assert compiled.tools.keys() == student.tools.keys()
