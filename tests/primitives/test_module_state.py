from __future__ import annotations

import datetime as dt
import json
import logging
import platform
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import dspex.primitives as primitives
from dspex.errors import ConfigurationError
from dspex.primitives import Example, Module, Prediction

from .fakes import SECRET, FakeLM, FakePredictor, KeyDroppingLM, KeyKeepingLM


class Demo(BaseModel):
    when: dt.date
    text: str


class Opaque:
    def __str__(self) -> str:
        return "opaque-value"


class Block(Module):
    def __init__(self) -> None:
        self.predict = FakePredictor("block")


class Program(Module):
    def __init__(self) -> None:
        self.first = FakePredictor("first")
        self.blocks = {"a": Block()}

    def forward(self, question: str) -> Prediction:
        return Prediction(answer=f"{self.first.instructions}:{question}")


def trained() -> Program:
    program = Program()
    program.first.instructions = "Think."
    program.first.demos = [{"q": "1", "a": "2"}]
    program.blocks["a"].predict.demos = [Example(q="x", a="y")]
    return program


def test_dump_and_load_state_roundtrip() -> None:
    state = trained().dump_state()
    assert list(state) == ["first", "blocks['a'].predict"]
    assert state["first"] == {"instructions": "Think.", "demos": [{"q": "1", "a": "2"}]}
    fresh = Program()
    fresh.load_state(state)
    assert fresh.first.instructions == "Think."
    assert fresh.blocks["a"].predict.demos == [Example(q="x", a="y")]


def test_load_state_names_unknown_and_missing_predictors() -> None:
    state = trained().dump_state()
    state["ghost"] = state.pop("first")
    with pytest.raises(
        ConfigurationError, match=r"no predictor named 'ghost'.*no state for 'first'"
    ):
        Program().load_state(state)


def test_load_state_is_all_or_nothing() -> None:
    program = trained()
    state = Program().dump_state()
    del state["blocks['a'].predict"]["demos"]  # the second predictor will reject it
    with pytest.raises(KeyError):
        program.load_state(state)
    assert program.first.instructions == "Think."  # first predictor restored


def test_dump_state_drops_secret_named_entries() -> None:
    program = trained()
    program.first.lm = FakeLM()
    state = program.dump_state()
    assert state["first"]["lm"] == {"model": "fake/model"}
    assert SECRET not in json.dumps(state, default=str)


def test_save_and_load_json_roundtrip(tmp_path: Path) -> None:
    program = trained()
    program.first.demos.append({"doc": Demo(when=dt.date(2024, 1, 2), text="t"), "x": Opaque()})
    path = tmp_path / "program.json"
    program.save(path)
    saved = json.loads(path.read_text())
    versions = saved["metadata"]["dependency_versions"]
    assert versions["python"] == ".".join(platform.python_version().split(".")[:2])
    assert versions["dspex"] == "0.1.0"
    assert saved["first"]["demos"][1] == {
        "doc": {"when": "2024-01-02", "text": "t"},
        "x": "opaque-value",
    }
    assert saved["blocks['a'].predict"]["demos"] == [{"q": "x", "a": "y"}]
    fresh = Program()
    fresh.load(path)
    assert fresh.dump_state() == {k: v for k, v in saved.items() if k != "metadata"}
    assert fresh.first.instructions == "Think."
    fresh.load_state(saved)  # the metadata entry is ignored by load_state too


def test_state_needs_a_json_or_pkl_path(tmp_path: Path) -> None:
    for call in (
        lambda: trained().save(tmp_path / "x.txt"),
        lambda: Program().load(tmp_path / "x"),
    ):
        with pytest.raises(ConfigurationError, match=r"\.json.*\.pkl"):
            call()


def test_loading_state_from_other_versions_logs_one_warning_per_dependency(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    trained().save(path)
    saved = json.loads(path.read_text())
    saved["metadata"]["dependency_versions"].update(dspex="0.0.1", python="2.7")
    path.write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.saving"):
        Program().load(path)
    mismatches = [r.getMessage() for r in caplog.records if "There is a mismatch of" in r.getMessage()]
    assert len(mismatches) == 2
    assert any("dspex 0.0.1" in m for m in mismatches) and any("python 2.7" in m for m in mismatches)


def test_state_files_from_older_dspex_with_flat_metadata_still_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    trained().save(path)
    saved = json.loads(path.read_text())
    saved["metadata"] = {"dspex": "0.0.9", "python": platform.python_version()}
    path.write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.saving"):
        fresh = Program().load(path)
    assert fresh.first.instructions == "Think."
    mismatches = [r.getMessage() for r in caplog.records if "mismatch" in r.getMessage()]
    assert len(mismatches) == 1 and "dspex 0.0.9" in mismatches[0]  # python compared as 3.x


def test_a_predictor_named_metadata_cannot_be_saved_as_json(tmp_path: Path) -> None:
    class Odd(Module):
        def __init__(self) -> None:
            self.metadata = FakePredictor()

    with pytest.raises(ConfigurationError, match="metadata"):
        Odd().save(tmp_path / "odd.json")


def test_save_program_and_load_it_back(tmp_path: Path) -> None:
    program = trained()
    program.save(tmp_path / "saved", save_program=True)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "metadata.json",
        "program.pkl",
    ]
    meta = json.loads((tmp_path / "saved" / "metadata.json").read_text())
    assert set(meta["dependency_versions"]) == {"dspex", "python", "cloudpickle"}
    loaded = primitives.load(tmp_path / "saved", allow_pickle=True)
    assert type(loaded).__name__ == "Program"
    assert loaded.dump_state() == program.dump_state()
    assert loaded(question="q").answer == "Think.:q"


def test_loading_a_program_needs_allow_pickle(tmp_path: Path) -> None:
    trained().save(tmp_path / "saved", save_program=True)
    with pytest.raises(ConfigurationError, match=r"runs any code.*allow_pickle=True"):
        primitives.load(tmp_path / "saved")
    with pytest.raises(ConfigurationError, match=r"program\.pkl"):
        primitives.load(tmp_path / "empty", allow_pickle=True)


def test_save_program_needs_a_directory_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        trained().save(tmp_path / "x.pkl", save_program=True)


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


@pytest.mark.parametrize("lm_class", [FakeLM, KeyDroppingLM, KeyKeepingLM])
def test_secrets_never_reach_saved_files(tmp_path: Path, lm_class: type[FakeLM]) -> None:
    program = trained()
    lm = lm_class()
    program.set_lm(lm)
    program.save(tmp_path / "state.json")
    program.save(tmp_path / "prog", save_program=True)
    assert SECRET.encode() not in all_bytes(tmp_path)
    loaded: Any = primitives.load(tmp_path / "prog", allow_pickle=True)
    assert all(p.lm is None for p in loaded.predictors())
    assert program.first.lm is lm  # the live program keeps its LM


def test_include_lm_keeps_an_lm_that_drops_its_key(tmp_path: Path) -> None:
    program = trained()
    program.set_lm(KeyDroppingLM())
    program.save(tmp_path / "prog", save_program=True, include_lm=True)
    assert SECRET.encode() not in all_bytes(tmp_path)
    loaded: Any = primitives.load(tmp_path / "prog", allow_pickle=True)
    assert loaded.first.lm.model == "fake/model" and loaded.first.lm.api_key is None


def test_include_lm_refuses_an_lm_that_keeps_its_key(tmp_path: Path) -> None:
    program = trained()
    program.set_lm(KeyKeepingLM())
    with pytest.raises(ConfigurationError, match="API key"):
        program.save(tmp_path / "prog", save_program=True, include_lm=True)
    assert not (tmp_path / "prog").exists()


def test_an_lm_held_outside_predictors_is_checked_too(tmp_path: Path) -> None:
    program = trained()
    program.judge = KeyKeepingLM()  # not a predictor's lm: pickled as is
    with pytest.raises(ConfigurationError, match="API key"):
        program.save(tmp_path / "prog", save_program=True)
