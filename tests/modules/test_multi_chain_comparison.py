"""MultiChainComparison: the attempts it shows the LM, its output fields, its checks on
the completions it is given; scripted (DummyLM) and over real HTTP (simulated LM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.errors import ConfigurationError, InputError
from dspex.simlm import SimLMServer, datasets, start_sim_lm
from dspex.utils import DummyLM


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server


ATTEMPTS = [
    dspex.Prediction(reasoning="Eleven nines make ninety-nine.\nSecond line, not shown.", answer="99"),
    {"rationale": "11 * 9 is 11 * 10 minus 11.", "answer": "99\nextra"},
    dspex.Prediction(reasoning="Guessing.", answer="98"),
]


def test_signature_adds_one_input_per_attempt_and_a_rationale_first() -> None:
    mcc = dspex.MultiChainComparison("question -> answer", M=2)
    signature = mcc.predict.signature
    assert list(signature.input_fields) == ["question", "reasoning_attempt_1", "reasoning_attempt_2"]
    assert list(signature.output_fields) == ["rationale", "answer"]
    assert mcc.predict.config == {"temperature": 0.7}


def test_the_lm_sees_each_attempt_and_answers_rationale_and_answer() -> None:
    dspex.configure(lm=DummyLM([{"rationale": "Two of three say 99, and 11 * 9 = 99.", "answer": "99"}]))
    mcc = dspex.MultiChainComparison("question -> answer")
    start = len(GLOBAL_HISTORY)
    result = mcc(ATTEMPTS, question="What is 11 * 9?")
    assert result.rationale == "Two of three say 99, and 11 * 9 = 99."
    assert result.answer == "99"
    entry = list(GLOBAL_HISTORY)[start]
    prompt = str(entry["messages"][-1]["content"])
    assert "Eleven nines make ninety-nine." in prompt and "Second line" not in prompt
    assert "11 * 9 is 11 * 10 minus 11." in prompt and "extra" not in prompt
    assert prompt.index("reasoning_attempt_1") < prompt.index("reasoning_attempt_2") < prompt.index("reasoning_attempt_3")
    assert "98" in prompt.split("reasoning_attempt_3")[1]
    assert entry["params"]["temperature"] == 0.7


def test_the_answer_is_read_from_the_last_output_field() -> None:
    dspex.configure(lm=DummyLM([{"rationale": "r", "summary": "s", "verdict": "yes"}]))
    mcc = dspex.MultiChainComparison("claim -> summary, verdict", M=1)
    start = len(GLOBAL_HISTORY)
    mcc([{"reasoning": "checked it", "summary": "not shown", "verdict": "yes-ish"}], claim="c")
    prompt = str(list(GLOBAL_HISTORY)[start]["messages"][-1]["content"])
    assert "yes-ish" in prompt and "not shown" not in prompt


def test_the_wrong_number_of_completions_is_an_input_error() -> None:
    mcc = dspex.MultiChainComparison("question -> answer", M=3)
    with pytest.raises(InputError, match=r"M=3.*got 2"):
        mcc(ATTEMPTS[:2], question="q")


def test_a_completion_without_reasoning_or_answer_is_an_input_error() -> None:
    mcc = dspex.MultiChainComparison("question -> answer", M=1)
    with pytest.raises(InputError, match="rationale' or 'reasoning"):
        mcc([{"answer": "99"}], question="q")
    with pytest.raises(InputError, match="'answer'"):
        mcc([{"reasoning": "r"}], question="q")


def test_bad_m_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="M=0"):
        dspex.MultiChainComparison("question -> answer", M=0)


def test_compares_a_chain_of_thoughts_completions_over_http(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim-a", api_base=sim.url, api_key="k", cache=False)
    rows = datasets.load("arithmetic", "dev")[:3]
    mcc = dspex.MultiChainComparison("question -> answer", M=3)
    cot = dspex.ChainOfThought("question -> answer", n=3)
    with dspex.context(lm=lm):
        for row in rows:
            attempts: Any = cot(question=row["question"]).completions
            result = mcc(attempts, question=row["question"])
            assert isinstance(result.rationale, str) and result.rationale
            assert isinstance(result.answer, str) and result.answer
