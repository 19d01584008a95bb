"""Loading a file that is not what the call expects: a typed error naming the file,
what is wrong with it and what to do, never a bare JSONDecodeError or a pickle lecture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dspex
from dspex.errors import ConfigurationError, SavedFileError
from dspex.primitives import Module

from .fakes import FakePredictor


class Program(Module):
    def __init__(self) -> None:
        self.first = FakePredictor("first")


class Other(Module):
    def __init__(self) -> None:
        self.second = FakePredictor("second")


def saved_state(tmp_path: Path) -> Path:
    path = tmp_path / "x.json"
    program = Program()
    program.first.instructions = "Think."
    program.save(path)
    return path


def test_a_corrupt_state_file_names_the_file_and_where_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{\n  "first": {\n    "demos": [,]\n  }\n}\n')
    with pytest.raises(SavedFileError) as caught:
        Program().load(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is not valid JSON (line 3, column 15: ")
    assert "program.save(" in message
    assert isinstance(caught.value, ConfigurationError)


def test_a_truncated_state_file_says_so(tmp_path: Path) -> None:
    path = saved_state(tmp_path)
    path.write_text(path.read_text()[:20])
    with pytest.raises(SavedFileError, match=re.escape(f"{path} is not valid JSON")):
        Program().load(path)


def test_a_missing_state_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(SavedFileError, match=re.escape(f"{path} does not exist")):
        Program().load(path)


def test_a_binary_state_file_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\x80\x04\x95 pickled")
    with pytest.raises(SavedFileError, match="is not a text file"):
        Program().load(path)


def test_a_json_list_is_not_a_state(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(SavedFileError, match=r"JSON but not a dspex state .* got a list"):
        Program().load(path)


def test_state_from_another_program_names_the_file(tmp_path: Path) -> None:
    path = saved_state(tmp_path)
    with pytest.raises(SavedFileError) as caught:
        Other().load(path)
    message = str(caught.value)
    assert message.startswith(f"{path} does not fit this Other: state does not match")
    assert "saved from a program built the same way" in message


def test_module_load_of_a_program_directory_points_to_dspex_load(tmp_path: Path) -> None:
    Program().save(tmp_path / "prog", save_program=True)
    with pytest.raises(
        SavedFileError, match=r"holds a whole saved program: load it with dspex\.load"
    ):
        Program().load(tmp_path / "prog")


def test_dspex_load_of_a_state_file_says_to_build_the_program(tmp_path: Path) -> None:
    path = saved_state(tmp_path)
    for allow_pickle in (False, True):
        with pytest.raises(SavedFileError) as caught:
            dspex.load(path, allow_pickle=allow_pickle)
        message = str(caught.value)
        assert message == (
            f"{path} is a saved state, not a whole program: build the program in code and "
            f"call program.load({str(path)!r})"
        )
        assert "pickle" not in message


def test_dspex_load_of_a_corrupt_json_file_says_both_what_it_is_and_is_not(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(SavedFileError) as caught:
        dspex.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is a JSON file, not a saved program")
    assert "not valid JSON (line 1, column 2" in message
    assert "runs any code" not in message


def test_dspex_load_of_a_missing_path_or_the_pickle_itself(tmp_path: Path) -> None:
    with pytest.raises(SavedFileError, match=r"does not exist: dspex\.load reads a directory"):
        dspex.load(tmp_path / "nowhere")
    Program().save(tmp_path / "prog", save_program=True)
    with pytest.raises(SavedFileError, match=r"pass its directory, dspex\.load\("):
        dspex.load(tmp_path / "prog" / "program.pkl", allow_pickle=True)


def test_dspex_load_of_a_damaged_pickle_names_the_file(tmp_path: Path) -> None:
    Program().save(tmp_path / "prog", save_program=True)
    pickle = tmp_path / "prog" / "program.pkl"
    pickle.write_bytes(pickle.read_bytes()[:30])
    with pytest.raises(SavedFileError) as caught:
        dspex.load(tmp_path / "prog", allow_pickle=True)
    message = str(caught.value)
    assert message.startswith(f"{pickle} could not be unpickled")
    assert "It was saved with dspex " in message


def test_dspex_load_of_a_corrupt_metadata_file_names_it(tmp_path: Path) -> None:
    Program().save(tmp_path / "prog", save_program=True)
    meta = tmp_path / "prog" / "metadata.json"
    meta.write_text("{")
    with pytest.raises(SavedFileError, match=re.escape(f"{meta} is not valid JSON")):
        dspex.load(tmp_path / "prog", allow_pickle=True)
