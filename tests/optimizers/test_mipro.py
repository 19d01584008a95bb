"""MIPROv2 against the simulated LM (in-process), and its preset resolver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.presets import resolve_plan, split_datasets, trials_for
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimTransport, datasets

SMALL = {"num_trials": 8, "minibatch_size": 20}


def examples(task: str, split: str, n: int, start: int = 0) -> list[dspex.Example]:
    rows = datasets.load(task, split)[start : start + n]  # type: ignore[arg-type]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]


TRAIN = examples("arithmetic", "train", 30)
VAL = examples("arithmetic", "train", 60, start=30)


def sim_lm(sim: SimTransport) -> dspex.LM:
    return dspex.LM("openai/sim-lm", transport=sim, api_base=sim.url, cache=False)


@pytest.fixture
def sim() -> SimTransport:
    return SimTransport(seed=0)


@pytest.fixture
def lm(sim: SimTransport) -> dspex.LM:
    return sim_lm(sim)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


def small(metric: Any = dspex.answer_exact_match, **kwargs: Any) -> MIPROv2:
    return MIPROv2(metric=metric, auto=None, num_candidates=5, **kwargs)


class Interrupted(BaseException):
    """Stands in for a process being stopped mid-run (not an error of the candidate)."""


# --- presets (no LM) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto", "predictors", "zeroshot", "candidates", "instructions", "trials", "val_cap"),
    [
        ("light", 1, False, 6, 3, 10, 100),
        ("light", 2, False, 6, 3, 20, 100),
        ("light", 1, True, 6, 6, 9, 100),
        ("medium", 1, False, 12, 6, 18, 300),
        ("heavy", 1, False, 18, 9, 27, 1000),
        ("heavy", 3, False, 18, 9, 50, 1000),
    ],
)
def test_presets_pick_the_documented_sizes(
    auto: str, predictors: int, zeroshot: bool, candidates: int, instructions: int, trials: int, val_cap: int
) -> None:
    demos = 0 if zeroshot else 4
    plan = resolve_plan(
        auto=auto, num_candidates=None, num_trials=None, num_predictors=predictors, valset_size=5000,
        max_bootstrapped_demos=demos, max_labeled_demos=demos,
    )
    assert plan.num_fewshot_candidates == candidates
    assert plan.num_instruct_candidates == instructions
    assert plan.num_trials == trials == trials_for(candidates, predictors, zeroshot)
    assert plan.val_size == val_cap
    assert plan.minibatch and plan.minibatch_size == 35
    assert plan.zeroshot is zeroshot


def test_auto_minibatches_only_above_fifty_validation_examples() -> None:
    common = {"auto": "light", "num_candidates": None, "num_trials": None, "num_predictors": 1}
    assert not resolve_plan(**common, valset_size=50, max_bootstrapped_demos=4, max_labeled_demos=4).minibatch
    assert resolve_plan(**common, valset_size=51, max_bootstrapped_demos=4, max_labeled_demos=4).minibatch


def test_explicit_sizes_are_used_as_given() -> None:
    plan = resolve_plan(
        auto=None, num_candidates=7, num_trials=13, num_predictors=2, valset_size=40,
        max_bootstrapped_demos=2, max_labeled_demos=2, minibatch_size=25,
    )
    assert (plan.num_fewshot_candidates, plan.num_instruct_candidates, plan.num_trials) == (7, 7, 13)
    assert (plan.minibatch, plan.minibatch_size, plan.val_size) == (True, 25, 40)


@pytest.mark.parametrize(
    ("auto", "num_candidates", "num_trials", "message"),
    [
        ("light", 6, None, "auto='light' sets num_candidates"),
        ("medium", None, 20, "auto='medium' sets num_candidates"),
        (None, None, None, "num_candidates"),
        (None, 6, None, "num_trials"),
        (None, None, 10, "num_candidates"),
    ],
)
def test_inconsistent_settings_raise_before_a_run_opens(
    auto: str | None, num_candidates: int | None, num_trials: int | None, message: str, store: RunStore
) -> None:
    optimizer = MIPROv2(metric=dspex.answer_exact_match, auto=auto, num_candidates=num_candidates)
    with pytest.raises(ConfigurationError, match=message):
        optimizer.compile(dspex.Predict("question -> answer"), trainset=TRAIN, num_trials=num_trials, store=store)
    assert store.list_runs() == []


def test_bad_preset_and_oversized_minibatch_raise() -> None:
    with pytest.raises(ConfigurationError, match="not a preset"):
        MIPROv2(metric=dspex.answer_exact_match, auto="turbo")
    with pytest.raises(ConfigurationError, match="minibatch_size=35 is larger than the valset"):
        resolve_plan(
            auto=None, num_candidates=4, num_trials=4, num_predictors=1, valset_size=20,
            max_bootstrapped_demos=4, max_labeled_demos=4,
        )


def test_default_valset_is_the_last_80_percent_of_the_trainset() -> None:
    train, val = split_datasets(list(range(10)), None)
    assert (train, val) == ([0, 1], [2, 3, 4, 5, 6, 7, 8, 9])
    assert split_datasets([1, 2], [3]) == ([1, 2], [3])


# --- compiling ------------------------------------------------------------------------


async def dev_score(program: Any) -> float:
    result = await Evaluate(devset=examples("arithmetic", "dev", 150), metric=dspex.answer_exact_match).acall(program)
    return result.score


async def test_mipro_beats_the_zero_shot_student(lm: dspex.LM, store: RunStore) -> None:
    student = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        compiled = await small().acompile(student, trainset=TRAIN, valset=VAL, store=store, **SMALL)
        before, after = await dev_score(student), await dev_score(compiled)

    assert after > before + 15
    assert student.demos == [] and compiled.demos  # the student is untouched
    trials = store.trials(compiled.run_info.run_id)
    kinds = [t.kind for t in trials]
    # Trial 0 is the default program on the full valset; 8 minibatch trials; 2 full evaluations.
    assert kinds[0] == "full" and trials[0].params == {"0_predictor_instruction": 0, "0_predictor_demos": 0}
    assert kinds.count("minibatch") == 8 and kinds.count("full") == 3
    assert compiled.score == max(t.score for t in trials if t.kind == "full") == compiled.run_info.best_score
    # DSPy-shaped results that stay out of the program's own predictors.
    assert set(compiled.trial_logs) == {t.number for t in trials}
    assert compiled.candidate_programs[0]["score"] == compiled.score
    assert len(compiled.mb_candidate_programs) == 8
    assert [name for name, _ in compiled.named_predictors()] == ["self"]
    # Full evaluations after the default one send only what their minibatches did not score.
    assert len(VAL) + 8 * 20 < compiled.total_calls < 3 * len(VAL) + 8 * 20


async def test_full_evaluations_reuse_minibatch_scores_exactly(lm: dspex.LM, store: RunStore) -> None:
    with dspex.context(lm=lm):
        compiled = await small().acompile(
            dspex.Predict("question -> answer"), trainset=TRAIN, valset=VAL, store=store, **SMALL
        )
        fulls = [entry for entry in compiled.trial_logs.values() if entry["kind"] == "full"]
        # The simulated LM answers a prompt the same way every time, so a full
        # evaluation from scratch must give each combined score exactly.
        for entry in fulls:
            fresh = await Evaluate(devset=VAL, metric=dspex.answer_exact_match).acall(entry["full_eval_program"])
            assert entry["full_eval_score"] == fresh.score

    sent = compiled.total_calls - 8 * 20
    assert len(fulls) == 3 and len(VAL) < sent < 3 * len(VAL)


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        self.draft = dspex.Predict("question -> notes")
        self.answer = dspex.ChainOfThought("question, notes -> answer")

    async def aforward(self, question: str) -> Any:
        notes = await self.draft.acall(question=question)
        return await self.answer.acall(question=question, notes=notes.notes)


async def test_every_predictor_gets_its_own_choices(lm: dspex.LM, store: RunStore) -> None:
    with dspex.context(lm=lm):
        compiled = await small(max_bootstrapped_demos=2, max_labeled_demos=2).acompile(
            TwoSteps(), trainset=TRAIN, valset=VAL, store=store, num_trials=6, minibatch_size=15
        )

    trials = store.trials(compiled.run_info.run_id)
    assert {tuple(sorted(t.params)) for t in trials} == {
        ("0_predictor_demos", "0_predictor_instruction", "1_predictor_demos", "1_predictor_instruction")
    }
    for _, predictor in compiled.named_predictors():
        assert len(predictor.demos) <= 4  # 2 bootstrapped + 2 labeled at most
    # A trial that used a bootstrapped set (index >= 2) for the chain-of-thought step
    # gave it demos from the teacher's traces: with the step's inputs and its reasoning.
    logs = [entry for entry in compiled.trial_logs.values() if entry["params"]["1_predictor_demos"] >= 2]
    program = logs[0].get("mb_program") or logs[0]["full_eval_program"]
    augmented = [d for d in dict(program.named_predictors())["answer.predict"].demos if d.get("augmented")]
    assert augmented
    assert all({"question", "notes", "reasoning", "answer"} <= set(d.keys()) for d in augmented)
    assert compiled.score == compiled.run_info.best_score


async def test_auto_light_runs_the_preset_plan(lm: dspex.LM, store: RunStore) -> None:
    trainset = examples("facts", "train", 100)
    with dspex.context(lm=lm):
        compiled = await MIPROv2(metric=dspex.answer_exact_match, auto="light", num_threads=32).acompile(
            dspex.Predict("question -> answer"), trainset=trainset, store=store
        )

    trials = store.trials(compiled.run_info.run_id)
    minibatch = [t for t in trials if t.kind == "minibatch"]
    assert len(minibatch) == 10  # max(2 * 2 * log2(6), 1.5 * 6)
    assert {len(t.params) for t in trials} == {2}
    assert max(t.params["0_predictor_instruction"] for t in trials) <= 2  # 3 instructions
    assert max(t.params["0_predictor_demos"] for t in trials) <= 5  # 6 demo sets
    # Valset: the last 80 of the 100 trainset examples; minibatches of 35. The default
    # program is scored on all 80; later full evaluations skip what minibatches scored.
    fulls = len(trials) - 10
    assert 35 * 10 + 80 < compiled.total_calls < 35 * 10 + 80 * fulls


async def test_same_seed_same_program_whatever_the_completion_order(store: RunStore) -> None:
    programs, params = [], []
    # The second simulated LM answers identically but with random per-request delays,
    # so trials and evaluations finish in another order.
    for sim in (SimTransport(seed=0), SimTransport(seed=0, latency_ms=1, jitter_ms=8)):
        with dspex.context(lm=sim_lm(sim)):
            # 16 trials: the later batches are asked from TPE's model, not its random start.
            compiled = await small(num_parallel_trials=4).acompile(
                dspex.Predict("question -> answer"), trainset=TRAIN, valset=VAL, store=store,
                num_trials=16, minibatch_size=20,
            )
        programs.append(compiled.dump_state())
        params.append([(t.number, t.params, t.score) for t in store.trials(compiled.run_info.run_id)])

    assert programs[0] == programs[1]
    assert params[0] == params[1]


async def test_a_failing_trial_is_recorded_as_failed(lm: dspex.LM, store: RunStore) -> None:
    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        # Some proposals open with this sentence; a judge that cannot handle them fails.
        if trace and trace[-1][0].signature.instructions.startswith("Read the input and respond"):
            raise RuntimeError("judge rejected this candidate")
        return dspex.answer_exact_match(example, prediction)

    with dspex.context(lm=lm):
        compiled = await small(metric).acompile(
            dspex.Predict("question -> answer"), trainset=TRAIN, valset=VAL, store=store, **SMALL
        )

    failed = [t for t in store.trials(compiled.run_info.run_id) if t.status == "failed"]
    assert failed
    for trial in failed:
        assert trial.score is None
        assert "judge rejected this candidate" in (trial.error or "")
        assert compiled.trial_logs[trial.number]["error"]
    assert not compiled.signature.instructions.startswith("Read the input and respond")
    assert compiled.run_info.status == "finished"


async def test_resume_after_interruption_gives_the_uninterrupted_program(
    lm: dspex.LM, store: RunStore
) -> None:
    calls = {"n": 0}

    def flaky_once(example: Any, prediction: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Interrupted("stopped while bootstrapping")
        return dspex.answer_exact_match(example, prediction)

    student = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        reference = await small().acompile(student, trainset=TRAIN, valset=VAL, store=store, **SMALL)
        with pytest.raises(Interrupted):
            await small(flaky_once).acompile(student, trainset=TRAIN, valset=VAL, store=store, run_id="r", **SMALL)
        assert store.get_run("r").status == "failed"
        resumed = await small(flaky_once).acompile(student, trainset=TRAIN, valset=VAL, store=store, run_id="r", **SMALL)

    assert resumed.run_info.replayed_steps > 0
    assert resumed.dump_state() == reference.dump_state()
    assert resumed.score == reference.score


async def test_budget_stop_returns_the_best_so_far_and_resumes(
    lm: dspex.LM, sim: SimTransport, store: RunStore
) -> None:
    student = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        reference = await small().acompile(student, trainset=TRAIN, valset=VAL, store=store, **SMALL)
        full_cost = reference.run_info.lm_calls
        stopped = await small().acompile(
            student, trainset=TRAIN, valset=VAL, store=store, run_id="b", max_lm_calls=full_cost - 100, **SMALL
        )
        resumed = await small().acompile(student, trainset=TRAIN, valset=VAL, store=store, run_id="b", **SMALL)

    info = stopped.run_info
    assert info.budget_limited and info.lm_calls <= full_cost - 100
    assert info.best_score is not None  # the default program was scored before the stop
    assert resumed.run_info.status == "finished" and resumed.run_info.replayed_steps > 0
    assert resumed.dump_state() == reference.dump_state()
