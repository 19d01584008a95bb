"""Settings a predictor call honours (disable_history, track_usage, rollout_id), the
names that are not settings, and the LM a saved predictor state restores.

Against the simulated LM over real HTTP on 127.0.0.1, with a cache of the test's own.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.errors import ConfigurationError, SavedFileError, UnknownSettingError
from dspex.simlm import SimLMServer, start_sim_lm

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

API_KEY = "sim-test-key-0123456789"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    # The server wants a key, so a call that reaches it shows which key the LM holds.
    with start_sim_lm(api_key=API_KEY) as server:
        yield server




def _requests(sim: SimLMServer) -> int:
    return int(sim.stats()["total"])


def _lm(sim: SimLMServer, **kwargs: Any) -> dspex.LM:
    return dspex.LM("openai/sim-a", api_base=sim.url, api_key=API_KEY, **kwargs)


# --- disable_history ---------------------------------------------------------------------


def test_disable_history_stops_recording_lm_calls(sim: SimLMServer) -> None:
    lm = _lm(sim, cache=False)
    predict = dspex.Predict("question -> answer")
    global_before = len(GLOBAL_HISTORY)
    with dspex.context(disable_history=True):
        predict(question="not recorded", lm=lm)
        lm("not recorded either")
    assert len(lm.history) == 0 and len(GLOBAL_HISTORY) == global_before
    predict(question="recorded", lm=lm)
    assert len(lm.history) == 1
    assert "recorded" in json.dumps(lm.history[-1]["messages"])


# --- track_usage -------------------------------------------------------------------------


def test_track_usage_true_is_what_predictions_always_do(sim: SimLMServer) -> None:
    with dspex.context(track_usage=True):
        lm = _lm(sim)
        prediction = dspex.Predict("question -> answer")(question="q", lm=lm)
    assert prediction.usage.calls == 1
    assert prediction.get_lm_usage()[lm.model]["prompt_tokens"] > 0


def test_track_usage_false_hides_per_model_usage_as_dspy_does(sim: SimLMServer) -> None:
    with dspex.context(track_usage=False):
        prediction = dspex.Predict("question -> answer")(question="q", lm=_lm(sim))
        assert prediction.get_lm_usage() is None
    assert prediction.usage.calls == 1  # the total is kept either way
    with pytest.raises(ConfigurationError, match="must be a bool"):
        dspex.configure(track_usage="no")


# --- rollout_id --------------------------------------------------------------------------


def test_context_rollout_id_gives_each_rollout_its_own_cache_entry(sim: SimLMServer) -> None:
    lm = _lm(sim)
    predict = dspex.Predict("question -> answer")
    start = _requests(sim)
    predict(question="same question", lm=lm)
    with dspex.context(rollout_id=1):
        predict(question="same question", lm=lm)
    with dspex.context(rollout_id=2):
        predict(question="same question", lm=lm)
    assert _requests(sim) == start + 3  # three rollouts: three calls
    with dspex.context(rollout_id=1):
        predict(question="same question", lm=lm)  # rollout 1 again: its cache entry
    assert _requests(sim) == start + 3
    assert lm.history[-1]["params"]["rollout_id"] == 1


def test_a_rollout_id_named_nearer_wins_over_the_context(sim: SimLMServer) -> None:
    lm = _lm(sim, rollout_id=7)
    predict = dspex.Predict("question -> answer")
    start = _requests(sim)
    predict(question="q7", lm=lm)
    with dspex.context(rollout_id=1):
        predict(question="q7", lm=lm)  # the LM's own rollout 7: cached
        predict(question="q7", lm=_lm(sim), config={"rollout_id": 7})  # the call's: cached
    assert _requests(sim) == start + 1


# --- names that are not settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "instead"),
    [("cache_dir", r"configure_cache\(disk_dir=\.\.\.\)"), ("runtime", r"dspex\.init")],
)
def test_names_that_are_not_settings_say_what_to_use(name: str, instead: str) -> None:
    for call in (
        lambda: dspex.configure(**{name: "x"}),
        lambda: dspex.context(**{name: "x"}),
        lambda: getattr(dspex.settings, name),
    ):
        with pytest.raises(UnknownSettingError, match=rf"'{name}' is not a dspex setting: .*{instead}"):
            call()


# --- Predict.load_state restores the LM ---------------------------------------------------


def _saved(sim: SimLMServer) -> dict[str, Any]:
    predict = dspex.Predict("question -> answer")
    predict.lm = _lm(sim, temperature=0.3, max_tokens=64, num_retries=1)
    return predict.dump_state()


def test_saved_state_holds_the_lm_settings_but_neither_key_nor_endpoint(sim: SimLMServer) -> None:
    text = json.dumps(_saved(sim))
    assert "openai/sim-a" in text and '"temperature": 0.3' in text
    assert API_KEY not in text and sim.url not in text and str(sim.port) not in text


def test_load_state_restores_model_and_settings_onto_the_lm_set_in_code(sim: SimLMServer) -> None:
    state = _saved(sim)
    predict = dspex.Predict("question -> answer")
    predict.lm = dspex.LM("openai/other", api_base=sim.url, api_key=API_KEY, top_p=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same endpoint: nothing to warn about
        predict.load_state(state)
    lm = predict.lm
    assert lm.model == "openai/sim-a" and lm.num_retries == 1
    assert lm.kwargs == {"temperature": 0.3, "max_tokens": 64}  # top_p was not saved
    assert lm.api_base == sim.url
    # The key of the LM set in code came along: the server, which wants it, answers.
    assert predict(question="q").answer


def test_load_state_without_an_lm_in_code_warns_that_the_endpoint_differs(
    sim: SimLMServer,
) -> None:
    predict = dspex.Predict("question -> answer")
    with pytest.warns(UserWarning, match=r"'openai/sim-a' was saved with another endpoint"):
        predict.load_state(_saved(sim))
    assert predict.lm.model == "openai/sim-a" and predict.lm.api_base is None
    assert predict.lm.kwargs == {"temperature": 0.3, "max_tokens": 64}


def test_load_state_warns_when_the_lm_in_code_points_elsewhere(sim: SimLMServer) -> None:
    predict = dspex.Predict("question -> answer")
    predict.lm = dspex.LM("openai/sim-a", api_base="http://127.0.0.1:9/v1")
    with pytest.warns(UserWarning, match="another endpoint"):
        predict.load_state(_saved(sim))
    assert predict.lm.api_base == "http://127.0.0.1:9/v1"


def test_an_endpoint_or_key_in_a_state_file_is_never_applied(sim: SimLMServer) -> None:
    state = _saved(sim)
    state["lm"] = {**state["lm"], "api_base": "http://attacker.invalid/v1", "api_key": "stolen"}
    predict = dspex.Predict("question -> answer")
    predict.lm = _lm(sim)
    with pytest.warns(UserWarning, match=r"sets api_base, api_key; ignored"):
        predict.load_state(state)
    assert predict.lm.api_base == sim.url
    assert predict(question="q").answer  # still the key given in code


def test_a_state_saved_without_an_lm_clears_it_as_in_dspy(sim: SimLMServer) -> None:
    state = dspex.Predict("question -> answer").dump_state()
    predict = dspex.Predict("question -> answer")
    predict.lm = _lm(sim)
    predict.load_state(state)
    assert predict.lm is None


class _TwoSteps(dspex.Module):
    def __init__(self) -> None:
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.Predict("question -> answer")


def test_module_load_keeps_the_same_lm_objects_when_a_later_predictor_rejects_its_state(
    sim: SimLMServer, tmp_path: Path
) -> None:
    program = _TwoSteps()
    program.first.lm = _lm(sim, temperature=0.1)
    state = program.dump_state()
    state["first"]["lm"]["temperature"] = 0.9
    state["second"]["lm"] = {"model": "nowhere/x"}  # an unknown provider: rejected
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    original = program.first.lm
    with pytest.raises(SavedFileError, match="unknown LM provider 'nowhere'"):
        program.load(path)
    assert program.first.lm is original and original.kwargs == {"temperature": 0.1}
    assert program.second.lm is None


def test_module_save_and_load_round_trip_restores_the_lm(sim: SimLMServer, tmp_path: Path) -> None:
    program = _TwoSteps()
    program.first.lm = _lm(sim, temperature=0.2)
    program.save(tmp_path / "p.json")
    fresh = _TwoSteps()
    fresh.first.lm = _lm(sim)
    fresh.load(tmp_path / "p.json")
    assert fresh.first.lm.kwargs == {"temperature": 0.2} and fresh.first.lm.api_base == sim.url
    assert fresh.second.lm is None
