"""LM.finetune and BootstrapFinetune over HTTP against the simulated LM's files and
fine-tuning jobs: the job goes queued -> running -> succeeded (or fails on an injected
fault), the fine-tuned model answers the trained questions more often, and what cannot
fine-tune says so before any work."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimLMServer, datasets, start_sim_lm

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

FAST = {"poll_interval": 0.01}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=0, api_key="sim-secret") as server:
        yield server




@pytest.fixture
def lm(sim: SimLMServer) -> dspex.LM:
    lm = dspex.LM("openai/sim-lm", api_base=sim.url, api_key="sim-secret")
    dspex.configure(lm=lm)
    return lm


def examples(split: str, start: int, stop: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[start:stop]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def correct(gold: Any, pred: Any, trace: Any = None) -> bool:
    try:
        return int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        return False


def chat_rows(n: int) -> list[dict[str, Any]]:
    adapter = dspex.ChatAdapter()
    signature = dspex.Predict("question -> answer: int").signature
    return [
        adapter.format_finetune_data(signature, [], {"question": e.question}, {"answer": e.answer})
        for e in examples("train", 0, n)
    ]


def test_a_job_runs_through_its_states_and_returns_an_lm_for_the_new_model(lm: dspex.LM) -> None:
    job = lm.finetune(chat_rows(5), train_kwargs={**FAST, "suffix": "unit"})
    tuned = job.result(timeout=30)
    assert isinstance(tuned, dspex.LM) and tuned.model.startswith("openai/ft:sim-lm:unit:")
    assert [e["status"] for e in job.events] == [
        "uploaded", "validating_files", "queued", "running", "succeeded"
    ]
    assert job.status() == "succeeded" and job.fine_tuned_model == tuned.model_name
    assert tuned("Say hello.")  # the new model answers at the same server, with the same key
    assert "sim-secret" not in json.dumps(job.events)  # nothing secret in the job's record


def test_an_injected_training_failure_fails_the_job_with_its_reason(lm: dspex.LM, sim: SimLMServer) -> None:
    request = urllib.request.Request(f"{sim.base_url}/admin/finetune", data=b'{"fail_next": 1}', method="POST")
    urllib.request.urlopen(request).read()
    job = lm.finetune(chat_rows(3), train_kwargs=FAST)
    with pytest.raises(dspex.FinetuneError, match="failed: the simulated training run failed"):
        job.result(timeout=30)
    assert job.status() == "failed"


def test_what_cannot_fine_tune_says_so_before_any_work(sim: SimLMServer) -> None:
    with pytest.raises(dspex.FinetuneNotSupportedError, match="OpenAI-compatible"):
        dspex.LM("anthropic/claude-x", api_key="k").finetune(chat_rows(1))
    with pytest.raises(dspex.InputError, match="end with the assistant"):
        dspex.LM("openai/sim-lm", api_base=sim.url, api_key="sim-secret").finetune(
            [{"messages": [{"role": "user", "content": "hi"}]}]
        )
    # A server without fine-tuning endpoints: the upload's 404 is the answer.
    with start_sim_lm() as plain:
        bare = dspex.LM("openai/sim-lm", api_base=plain.base_url + "/nothing-here", api_key="k")
        with pytest.raises(dspex.FinetuneNotSupportedError, match="does not offer fine-tuning"):
            bare.finetune(chat_rows(1), train_kwargs=FAST).result(timeout=30)


def test_bootstrap_finetune_trains_on_the_teachers_good_runs_and_the_result_scores_higher(
    lm: dspex.LM, sim: SimLMServer, tmp_path: Path
) -> None:
    train = examples("train", 0, 40)
    program = dspex.ChainOfThought("question -> answer: int")
    evaluate = dspex.Evaluate(devset=train, metric=correct, num_threads=16)
    before = evaluate(program).score
    optimizer = dspex.BootstrapFinetune(metric=correct, train_kwargs=FAST)
    store = RunStore(tmp_path / "runs.db")
    tuned = optimizer.compile(program, trainset=train, store=store, run_id="ft")
    assert tuned.predict.lm.model.startswith("openai/ft:sim-lm:")
    assert program.predict.lm is None  # the student is untouched
    after = evaluate(tuned).score
    assert after >= before + 15, (before, after)  # it learned the questions it was trained on
    # Resumed: the data and the job are stored steps, nothing is trained again.
    again = optimizer.compile(program, trainset=train, store=store, run_id="ft")
    assert again.predict.lm.model == tuned.predict.lm.model and again.run_info.replayed_steps >= 2


def test_bootstrap_finetune_refuses_an_lm_that_cannot_fine_tune(tmp_path: Path) -> None:
    dspex.configure(lm=dspex.utils.DummyLM([{"answer": "1"}]))
    with pytest.raises(dspex.FinetuneNotSupportedError, match="cannot be fine-tuned"):
        dspex.BootstrapFinetune().compile(dspex.Predict("question -> answer"), trainset=examples("train", 0, 2),
                                          store=RunStore(tmp_path / "runs.db"))
