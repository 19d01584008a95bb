"""A two-step program against the simulated LM over real HTTP, surviving injected faults."""

from __future__ import annotations

import pytest

import dspex
from dspex.clients.retry import RetryPolicy
from dspex.errors import AdapterParseError
from dspex.simlm import datasets, start_sim_lm


class SolveWithNotes(dspex.Module):
    """ChainOfThought writes notes about the question; Predict answers from them."""

    def __init__(self) -> None:
        self.notes = dspex.ChainOfThought("question -> notes")
        self.answer = dspex.Predict("question, notes -> answer: int")

    async def aforward(self, question: str) -> dspex.Prediction:
        notes = await self.notes.acall(question=question)
        return await self.answer.acall(question=question, notes=notes.notes)


def _devset(size: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", "dev")[:size]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def _lm(url: str) -> dspex.LM:
    lm = dspex.LM("openai/sim-1", api_base=url, api_key="sim-local", cache=False, timeout=5.0)
    # Fast backoff keeps the test short; the schedule itself is tested in tests/providers.
    lm.retry_policy = RetryPolicy(num_retries=6, base=0.005, cap=0.05, retry_after_cap=0.05)
    return lm


def test_two_step_program_over_http_without_faults() -> None:
    devset = _devset(20)
    with start_sim_lm(seed=1) as server:
        with dspex.context(lm=_lm(server.url)):
            result = dspex.Evaluate(devset=devset, metric=dspex.answer_exact_match, num_threads=8)(
                SolveWithNotes()
            )
        stats = server.stats()
    assert len(result.results) == 20 and result.n_errors == 0
    assert stats["completions"] == 40  # two LM calls per example, nothing else
    assert result.usage is not None and result.usage.calls == 40
    assert 0 < result.score <= 100


def test_run_survives_500s_429s_and_malformed_replies() -> None:
    devset = _devset(40)
    faults = {
        "error_500_rate": 0.15,
        "error_429_rate": 0.15,
        "retry_after": 0.01,
        "malformed_rate": 0.1,
    }
    with start_sim_lm(seed=2, faults=faults) as server:
        with dspex.context(lm=_lm(server.url)):
            result = dspex.Evaluate(
                devset=devset, metric=dspex.answer_exact_match, num_threads=16, max_errors=40
            )(SolveWithNotes())
        stats = server.stats()
    # Every example is accounted for: a score, or a recorded error.
    assert len(result.results) == 40
    assert [row[0] for row in result.results] == devset
    # Retries absorbed the 500s and 429s; only a reply malformed twice in a row
    # (Chat, then the JSON fallback) can still fail an example.
    assert result.n_errors <= 4
    assert all(f.error_type == AdapterParseError.__name__ for f in result.errors)
    assert stats["by_status"].get("500", stats["by_status"].get(500, 0)) > 0
    assert stats["by_status"].get("429", stats["by_status"].get(429, 0)) > 0
    assert stats["faults"].get("malformed", 0) > 0
    # Malformed replies were retried through the JSON adapter: more than 2 good calls per example.
    assert stats["completions"] > 80
    assert result.score > 0


def test_configured_lm_missing_is_a_clear_error() -> None:
    with dspex.context(lm=None), pytest.raises(dspex.ConfigurationError, match="no LM is configured"):
        SolveWithNotes()(question="What is 1 + 1?")
