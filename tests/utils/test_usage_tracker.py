"""DSPy's usage-tracker API (`dspex.utils.usage_tracker`) and the usage_tracker setting,
against the simulated LM over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import dspex
from dspex.clients.types import LMResponse, Usage
from dspex.errors import ConfigurationError
from dspex.simlm import SimLMServer, start_sim_lm
from dspex.utils.usage_tracker import UsageTracker, track_usage

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server




def _lm(sim: SimLMServer, model: str = "openai/sim-a", **kwargs: Any) -> dspex.LM:
    return dspex.LM(model, api_base=sim.url, **kwargs)


def test_totals_sum_numbers_and_nested_dicts_per_model() -> None:
    class Details(BaseModel):
        cached_tokens: int
        audio_tokens: int | None

    tracker = UsageTracker()
    tracker.add_usage("m", {"prompt_tokens": 3, "details": {"cached_tokens": 1}})
    tracker.add_usage("m", {"prompt_tokens": 4, "completion_tokens": 2, "details": None})
    tracker.add_usage("m", {"details": Details(cached_tokens=5, audio_tokens=None)})
    tracker.add_usage("other", {"prompt_tokens": 1})
    tracker.add_usage("empty", {})  # nothing to record
    assert tracker.usage_data["m"][2] == {"details": {"cached_tokens": 5, "audio_tokens": None}}
    assert tracker.get_total_tokens() == {
        "m": {"prompt_tokens": 7, "completion_tokens": 2, "details": {"cached_tokens": 6, "audio_tokens": None}},
        "other": {"prompt_tokens": 1},
    }


def test_track_usage_records_each_call_per_model(sim: SimLMServer) -> None:
    a, b = _lm(sim, cache=False), _lm(sim, "openai/sim-b", cache=False)
    predict = dspex.Predict("question -> answer")
    with track_usage() as tracker:
        assert dspex.settings.usage_tracker is tracker  # as in DSPy
        predict(question="one", lm=a)
        predict(question="two", lm=a)
        predict(question="three", lm=b)
    assert dspex.settings.usage_tracker is None
    assert [len(tracker.usage_data[m]) for m in ("openai/sim-a", "openai/sim-b")] == [2, 1]
    totals = tracker.get_total_tokens()
    assert set(totals) == {"openai/sim-a", "openai/sim-b"}
    assert totals["openai/sim-a"]["calls"] == 2
    assert totals["openai/sim-a"]["total_tokens"] == (
        totals["openai/sim-a"]["prompt_tokens"] + totals["openai/sim-a"]["completion_tokens"]
    ) > 0
    assert tracker.total().calls == 3  # dspex's Usage view of the same calls


def test_cache_hits_are_not_usage(sim: SimLMServer) -> None:
    lm = _lm(sim)
    predict = dspex.Predict("question -> answer")
    predict(question="cached", lm=lm)
    with track_usage() as tracker:
        predict(question="cached", lm=lm)
    assert tracker.get_total_tokens() == {} and tracker.cache_hits() == {"openai/sim-a": 1}


def test_the_usage_tracker_setting_collects_calls(sim: SimLMServer) -> None:
    mine = UsageTracker()
    with dspex.context(usage_tracker=mine):
        dspex.Predict("question -> answer")(question="q", lm=_lm(sim, cache=False))
        with track_usage() as inner:  # both see the call, the setting's tracker once
            dspex.Predict("question -> answer")(question="r", lm=_lm(sim, cache=False))
    assert len(mine.usage_data["openai/sim-a"]) == 2
    assert len(inner.usage_data["openai/sim-a"]) == 1
    with pytest.raises(ConfigurationError, match="usage_tracker"):
        dspex.context(usage_tracker="not a tracker")


class _OtherLM:
    """An LM object that is not dspex's: Predict reports its usage for it."""

    model = "custom/lm"

    async def acomplete(self, messages: Any, **kwargs: Any) -> LMResponse:
        return LMResponse(["[[ ## answer ## ]]\nhi\n\n[[ ## completed ## ]]"], Usage(4, 2, 1), self.model)


def test_other_lm_objects_are_tracked_and_priced_per_prediction() -> None:
    with track_usage() as tracker:
        prediction = dspex.Predict("question -> answer")(question="q", lm=_OtherLM())
    assert tracker.get_total_tokens()["custom/lm"]["total_tokens"] == 6
    assert prediction.get_lm_usage() == {
        "custom/lm": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "calls": 1, "cost": None}
    }


def test_a_program_prediction_carries_usage_per_model(sim: SimLMServer) -> None:
    class TwoModels(dspex.Module):
        def __init__(self) -> None:
            self.first = dspex.Predict("question -> answer")
            self.second = dspex.Predict("question, answer -> score")

        def forward(self, question: str) -> dspex.Prediction:
            answer = self.first(question=question, lm=_lm(sim, cache=False)).answer
            return self.second(question=question, answer=answer, lm=_lm(sim, "openai/sim-b", cache=False))

    prediction = TwoModels()(question="q")
    usage = prediction.get_lm_usage()
    assert set(usage) == {"openai/sim-a", "openai/sim-b"}
    assert usage["openai/sim-a"]["calls"] == 1 and usage["openai/sim-b"]["prompt_tokens"] > 0
    assert prediction.usage.calls == 2  # the total covers both predictors
