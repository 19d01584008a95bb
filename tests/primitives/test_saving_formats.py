"""The saving formats DSPy programs use: .pkl state (allow_pickle to load), whole
programs with modules_to_serialize, errors that are also the builtin DSPy raises,
and attribute paths as DSPy prints them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import (
    PickleNotAllowedError,
    SavedFileError,
    SavedProgramImportError,
    StateMismatchError,
)
from dspex.primitives import Example, Module
from dspex.primitives.module import set_attribute_by_name

from .fakes import SECRET, FakeLM, FakePredictor


class Program(Module):
    def __init__(self) -> None:
        self.first = FakePredictor("first")
        self.tools = {"search": FakePredictor("search"), 7: FakePredictor("seven")}


class Other(Module):
    def __init__(self) -> None:
        self.x = FakePredictor()


def test_pkl_state_round_trips_values_json_cannot_hold(tmp_path: Path) -> None:
    import datetime as dt

    program = Program()
    program.first.demos = [Example(when=dt.date(2024, 1, 2), answer="x")]
    program.first.lm = FakeLM()
    path = tmp_path / "state.pkl"
    program.save(path)
    assert SECRET.encode() not in path.read_bytes()  # secret-named entries are dropped
    fresh = Program()
    with pytest.raises(PickleNotAllowedError, match=r"Loading \.pkl files can run arbitrary code"):
        fresh.load(path)
    assert fresh.first.demos == []  # refused before anything was read
    assert fresh.load(path, allow_pickle=True) is fresh
    assert fresh.first.demos == [Example(when=dt.date(2024, 1, 2), answer="x")]


def test_a_state_missing_a_predictor_is_a_key_error_and_changes_nothing(tmp_path: Path) -> None:
    program = Program()
    program.first.demos = [{"q": "1"}]
    state = program.dump_state()
    del state["tools['search']"]
    fresh = Program()
    with pytest.raises(KeyError) as caught:
        fresh.load_state(state)
    assert isinstance(caught.value, StateMismatchError)
    assert str(caught.value).startswith("state does not match Program: no state for")
    assert fresh.first.demos == []
    path = tmp_path / "state.json"
    program.save(path)
    with pytest.raises(StateMismatchError, match=r"does not fit this Other"):
        Other().load(path)


def test_save_program_stores_modules_to_serialize_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "saving_user_mod.py").write_text(
        "import dspex\n\nclass Doubler(dspex.Module):\n    def forward(self, x):\n"
        "        return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(source))
    import saving_user_mod  # type: ignore[import-not-found]

    program = saving_user_mod.Doubler()
    program.save(tmp_path / "by_ref", save_program=True)
    program.save(tmp_path / "by_value", save_program=True, modules_to_serialize=[saving_user_mod])
    import cloudpickle

    assert "saving_user_mod" not in cloudpickle.list_registry_pickle_by_value()
    monkeypatch.delitem(sys.modules, "saving_user_mod")
    sys.path.remove(str(source))
    with pytest.raises(ModuleNotFoundError) as caught:
        dspex.load(tmp_path / "by_ref", allow_pickle=True)
    assert isinstance(caught.value, SavedProgramImportError)
    assert "modules_to_serialize=[saving_user_mod]" in str(caught.value)
    assert dspex.load(tmp_path / "by_value", allow_pickle=True)(x=4) == 8


def test_loading_a_program_without_allow_pickle_is_a_value_error(tmp_path: Path) -> None:
    Program().save(tmp_path / "prog", save_program=True)
    with pytest.raises(ValueError, match="Loading with pickle is not allowed") as caught:
        dspex.load(tmp_path / "prog")
    assert isinstance(caught.value, PickleNotAllowedError)


def test_save_program_refuses_a_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(dspex.ConfigurationError, match="is a file"):
        Program().save(tmp_path / "taken", save_program=True)


def test_state_files_need_json_or_pkl(tmp_path: Path) -> None:
    with pytest.raises(SavedFileError, match=r"\.json \(or \.pkl"):
        Program().load(tmp_path / "state.txt")


def test_parameter_and_sub_module_names_follow_dspy() -> None:
    program = Program()
    assert [name for name, _ in program.named_parameters()] == [
        "first",
        "tools['search']",
        "tools['7']",
    ]
    names = [name for name, _ in program.named_sub_modules(type_=FakePredictor)]
    assert names == ["self.first", "self.tools[search]", "self.tools[7]"]


def test_set_attribute_by_name_follows_printed_paths() -> None:
    root: Any = Module()
    root.sub = Module()
    root.sub.items = [Module(), {"key": Module()}]
    set_attribute_by_name(root, "sub.items[0].flag", 1)
    set_attribute_by_name(root, "sub.items[1]['key'].flag", 2)
    set_attribute_by_name(root, "self.sub.items[1][key].other", 3)
    set_attribute_by_name(root, "sub.items[0]", "replaced")
    assert root.sub.items[0] == "replaced"
    assert root.sub.items[1]["key"].flag == 2 and root.sub.items[1]["key"].other == 3
    with pytest.raises(dspex.ConfigurationError, match="cannot read attribute path"):
        set_attribute_by_name(root, "sub..x", 1)


def test_predict_load_state_returns_self_and_wants_a_signature() -> None:
    predict = dspex.Predict("question -> answer")
    predict.demos = [Example(question="q", answer="a")]
    state = predict.dump_state()
    fresh = dspex.Predict("question -> answer")
    assert fresh.load_state(state) is fresh
    assert fresh.demos == [{"question": "q", "answer": "a"}]
    with pytest.raises(KeyError, match="no 'signature' entry"):
        fresh.load_state({"demos": []})
    assert fresh.demos == [{"question": "q", "answer": "a"}]
