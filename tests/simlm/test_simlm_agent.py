"""The simulated LM playing an agent for ReAct's prompts: it picks a listed tool that
fits the question with arguments taken from it, finishes once an observation is in,
answers the extraction step from the observation, and plays a context-window limit."""

from __future__ import annotations

import random
from typing import Any

import pytest

import dspex
from dspex.adapters.chat import ChatAdapter, split_sections
from dspex.errors import ContextWindowExceededError
from dspex.simlm import agent, oracle, start_sim_lm
from dspex.simlm.oracle import OracleConfig
from dspex.simlm.prompt import parse


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression."""
    return 0.0


def lookup_capital(country: str) -> str:
    """The capital city of a country."""
    return ""


def square(n: int) -> int:
    """Square a whole number."""
    return n * n


AGENT = dspex.ReAct("question -> answer", tools=[calculate, lookup_capital, square])


def _reply(module: Any, **inputs: Any) -> dict[str, str]:
    messages = ChatAdapter().format(module.signature, [], inputs)
    prompt = parse([(m["role"], m["content"]) for m in messages])
    return split_sections(oracle.reply(prompt, random.Random(0), OracleConfig()))


def _step(question: str, trajectory: dict[str, Any] | None = None) -> dict[str, str]:
    text = ChatAdapter().format_field_with_value(trajectory or {})
    return _reply(AGENT.react, question=question, trajectory=text)


def test_arithmetic_question_calls_the_calculator_with_the_expression() -> None:
    step = _step("What is 12 * (3 + 4)?")
    assert step["next_tool_name"] == "calculate"
    assert step["next_tool_args"] == '{"expression": "12 * (3 + 4)"}'
    assert step["next_thought"]


def test_lookup_question_calls_the_tool_sharing_its_words_with_the_subject() -> None:
    step = _step("What is the capital of France?")
    assert (step["next_tool_name"], step["next_tool_args"]) == ("lookup_capital", '{"country": "France"}')


def test_numeric_argument_without_a_number_in_the_question_gets_the_text() -> None:
    step = _step("What is the square of seven?")
    assert (step["next_tool_name"], step["next_tool_args"]) == ("square", '{"n": "seven"}')


def test_a_tool_the_question_names_is_called_even_if_not_listed() -> None:
    assert _step("Please use the `weather` tool for Oslo.")["next_tool_name"] == "weather"


def test_no_fitting_tool_means_finish() -> None:
    assert _step("Tell me a joke.")["next_tool_name"] == "finish"


def test_an_observation_in_the_trajectory_means_finish() -> None:
    trajectory = {"thought_0": "t", "tool_name_0": "calculate", "tool_args_0": {"expression": "1+1"}, "observation_0": 2}
    step = _step("What is 1 + 1?", trajectory)
    assert (step["next_tool_name"], step["next_tool_args"]) == ("finish", "{}")


def test_extraction_answers_from_the_last_good_observation() -> None:
    trajectory = {
        "thought_0": "t",
        "tool_name_0": "lookup_capital",
        "tool_args_0": {"country": "France"},
        "observation_0": "Paris",
        "thought_1": "done",
        "tool_name_1": "finish",
        "tool_args_1": {},
        "observation_1": "Completed.",
    }
    text = ChatAdapter().format_field_with_value(trajectory)
    reply = _reply(AGENT.extract.predict, question="What is the capital of France?", trajectory=text)
    assert reply["answer"] == "Paris" and "Paris" in reply["reasoning"]


def test_extraction_ignores_error_observations() -> None:
    inputs = {"observation_0": "Execution error in square: bad arguments", "observation_1": "Completed."}
    assert agent.answer_from_trajectory(inputs) is None


def test_tool_lines_in_dspex_and_dspy_layouts_are_read() -> None:
    instructions = "\n".join(
        [
            '(1) search: Find documents. Arguments (JSON schema per argument): {"query": {"type": "string"}}',
            "(2) get_weather, whose description is <desc>Weather now.</desc>. It takes arguments "
            "{'city': {'type': 'string'}}.",
            "(3) finish, whose description is <desc>Done.</desc>. It takes arguments {}.",
        ]
    )
    assert agent.tool_schemas(instructions) == {
        "search": {"query": {"type": "string"}},
        "get_weather": {"city": {"type": "string"}},
        "finish": {},
    }


def test_context_window_limit_refuses_long_prompts_over_http() -> None:
    with start_sim_lm(faults={"context_window_tokens": 60}) as server:
        lm = dspex.LM("openai/sim", api_base=server.url, api_key="k", cache=False, num_retries=0)
        assert lm("short")  # fits
        with pytest.raises(ContextWindowExceededError, match="too long"):
            lm("word " * 400)
