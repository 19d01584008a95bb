"""The grounded instruction proposer against the simulated LM."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import dspex
from dspex.optimizers.proposer import (
    GroundedProposer,
    ProposerSettings,
    proposal_signature,
    render_examples,
)
from dspex.optimizers.run import Run
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimTransport, datasets
from dspex.simlm.tasks import instruction_quality

T = TypeVar("T")


def examples(task: str, split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load(task, split)[:n]  # type: ignore[arg-type]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]


def sim_lm(sim: SimTransport) -> dspex.LM:
    return dspex.LM("openai/sim-lm", transport=sim, api_base=sim.url, cache=False)


class CountingSteps:
    """Records the step keys the proposer asks for and runs them directly."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def step(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        self.keys.append(key)
        return await fn()


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        self.draft = dspex.Predict("question -> notes")
        self.answer = dspex.ChainOfThought("question, notes -> answer")

    async def aforward(self, question: str) -> Any:
        notes = await self.draft.acall(question=question)
        return await self.answer.acall(question=question, notes=notes.notes)


async def test_proposes_n_per_predictor_with_the_original_first() -> None:
    sim = SimTransport(seed=0)
    program = TwoSteps()
    steps = CountingSteps()
    proposer = GroundedProposer(sim_lm(sim), seed=1, steps=steps)

    candidates = await proposer.propose_instructions(program, examples("arithmetic", "train", 25), 4)

    assert len(candidates) == 2
    for (_, predictor), texts in zip(program.named_predictors(), candidates, strict=True):
        assert texts[0] == predictor.signature.instructions
        assert len(texts) == 4
        assert len(set(texts)) == 4  # distinct proposals
    # Grounded: the prompt model saw the task, so some proposals carry its key ideas.
    assert max(instruction_quality("arithmetic", t) for texts in candidates for t in texts[1:]) > 0
    # 3 observation batches + summary + program + 2 modules + 2 x 3 proposals, each one step.
    assert sorted(k.split("/")[1] for k in steps.keys).count("instruction") == 6
    assert len(steps.keys) == len(set(steps.keys)) == 13
    assert sim.stats()["completions"] == 13
    assert proposer.failures == []


async def test_proposals_are_requested_concurrently() -> None:
    sim = SimTransport(seed=0, latency_ms=30)
    proposer = GroundedProposer(sim_lm(sim), seed=1, settings=ProposerSettings(program_aware=False, data_aware=False))

    await proposer.propose_instructions(dspex.Predict("question -> answer"), examples("facts", "train", 10), 6)

    stats = sim.stats()
    assert stats["completions"] == 5
    assert stats["max_in_flight"] == 5  # all five proposals at once, not one after another


async def test_steps_are_durable_in_a_run(tmp_path: Path) -> None:
    sim = SimTransport(seed=0)
    store = RunStore(tmp_path / "runs.sqlite3")
    program = dspex.Predict("question -> answer")
    trainset = examples("sentiment", "train", 12)

    first = Run.open("MIPROv2", run_id="r1", store=store)
    before = await GroundedProposer(sim_lm(sim), seed=3, steps=first).propose_instructions(program, trainset, 3)
    calls = sim.stats()["completions"]
    again = Run.open("MIPROv2", run_id="r1", store=store)
    after = await GroundedProposer(sim_lm(sim), seed=3, steps=again).propose_instructions(program, trainset, 3)

    assert after == before
    assert sim.stats()["completions"] == calls  # everything replayed, no LM call
    assert again.replayed_steps == calls


async def test_a_failed_proposal_is_listed_and_dropped() -> None:
    sim = SimTransport(seed=0, faults={"error_500_rate": 1.0})
    lm = dspex.LM("openai/sim-lm", transport=sim, api_base=sim.url, cache=False, num_retries=0)
    settings = ProposerSettings(program_aware=False, data_aware=False)
    proposer = GroundedProposer(lm, seed=1, settings=settings)
    program = dspex.Predict("question -> answer")

    candidates = await proposer.propose_instructions(program, examples("facts", "train", 5), 3)

    assert candidates == [[program.signature.instructions]]
    assert len(proposer.failures) == 2
    assert "predictor 0" in proposer.failures[0]


def test_settings_switch_off_their_inputs() -> None:
    full = proposal_signature(ProposerSettings())
    assert set(full.input_fields) == {
        "dataset_description", "program_code", "program_description", "module",
        "module_description", "task_demos", "basic_instruction", "tip",
    }
    bare = proposal_signature(
        ProposerSettings(program_aware=False, data_aware=False, tip_aware=False, fewshot_aware=False)
    )
    assert set(bare.input_fields) == {"module", "basic_instruction"}
    assert list(bare.output_fields) == ["proposed_instruction"]


def test_rendered_examples_never_expose_a_bare_input() -> None:
    # A block that is only a dataset question would read as the question being asked.
    rows = [dspex.Example(question="What is 2 + 2?\n\nreally", answer="4")]
    text = render_examples(rows)
    assert text == "Example 1:\nquestion: What is 2 + 2? really\nanswer: 4"
    for block in text.split("\n\n"):
        assert block.startswith("Example ")


@pytest.mark.parametrize("flag", ["program_aware", "data_aware"])
async def test_switched_off_grounding_makes_no_calls(flag: str) -> None:
    sim = SimTransport(seed=0)
    steps = CountingSteps()
    settings = ProposerSettings(**{flag: False})
    proposer = GroundedProposer(sim_lm(sim), seed=1, settings=settings, steps=steps)

    await proposer.propose_instructions(dspex.Predict("question -> answer"), examples("facts", "train", 10), 2)

    kinds = {key.split("/")[1] for key in steps.keys}
    if flag == "program_aware":
        assert kinds == {"observe", "summary", "instruction"}
    else:
        assert kinds == {"program", "module", "instruction"}
