"""`settings.save` / `load_settings`: the effective settings in a cloudpickle file,
read back only with allow_pickle=True, never holding an API key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dspex
from dspex.errors import ConfigurationError, PickleNotAllowedError, SavedFileError
from dspex.primitives import configure, context, load_settings, settings

from .fakes import SECRET, KeyDroppingLM, KeyKeepingLM


def double(x: int) -> int:
    return 2 * x


def test_saved_settings_load_back_into_configure(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    configure(lm=KeyDroppingLM(), callbacks=[double], num_threads=3)
    settings.save(path)
    configure(lm=None, callbacks=None, num_threads=16)
    loaded = dspex.load_settings(path, allow_pickle=True)
    assert "caller_modules" not in loaded  # per-call state is not a setting to restore
    configure(**loaded)
    assert settings.lm.model == "fake/model" and settings.lm.api_key is None
    assert settings.callbacks[0](4) == 8 and settings.num_threads == 3


def test_context_overrides_are_saved_as_they_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    with context(max_errors=2):
        settings.save(path)
    assert load_settings(path, allow_pickle=True)["max_errors"] == 2


def test_exclude_keys_leaves_settings_out(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    configure(adapter=dspex.JSONAdapter(), num_threads=5)
    settings.save(path, exclude_keys=["adapter"])
    loaded = load_settings(path, allow_pickle=True)
    assert "adapter" not in loaded and loaded["num_threads"] == 5


def test_loading_settings_needs_allow_pickle(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    settings.save(path)
    with pytest.raises(PickleNotAllowedError, match=r"allow_pickle=True") as caught:
        load_settings(path)
    assert isinstance(caught.value, ValueError)
    assert isinstance(settings.load(path, allow_pickle=True), dict)


def test_a_key_that_survives_pickling_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    configure(lm=KeyKeepingLM())
    with pytest.raises(ConfigurationError, match="API key"):
        settings.save(path)
    assert not path.exists()
    configure(lm=KeyDroppingLM())
    settings.save(path)
    assert SECRET.encode() not in path.read_bytes()


def test_unpicklable_settings_say_to_exclude_them(tmp_path: Path) -> None:
    configure(adapter=(x for x in ()))  # a generator cannot be pickled
    with pytest.raises(ConfigurationError, match=r"exclude_keys"):
        settings.save(tmp_path / "settings.pkl")


def test_missing_or_foreign_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SavedFileError, match="does not exist"):
        load_settings(tmp_path / "nowhere.pkl", allow_pickle=True)
    import cloudpickle

    (tmp_path / "list.pkl").write_bytes(cloudpickle.dumps([1]))
    with pytest.raises(SavedFileError, match="not saved settings"):
        load_settings(tmp_path / "list.pkl", allow_pickle=True)


def test_modules_to_serialize_stores_a_module_the_loader_cannot_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "settings_helpers_mod.py").write_text("def bump(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import settings_helpers_mod  # type: ignore[import-not-found]

    configure(callbacks=[settings_helpers_mod.bump])
    by_reference, by_value = tmp_path / "ref.pkl", tmp_path / "value.pkl"
    settings.save(by_reference)
    settings.save(by_value, modules_to_serialize=[settings_helpers_mod])
    import cloudpickle

    # The registration lasts only for the save.
    assert "settings_helpers_mod" not in cloudpickle.list_registry_pickle_by_value()
    monkeypatch.delitem(sys.modules, "settings_helpers_mod")
    sys.path.remove(str(tmp_path))
    with pytest.raises(SavedFileError, match="could not be unpickled"):
        load_settings(by_reference, allow_pickle=True)
    assert load_settings(by_value, allow_pickle=True)["callbacks"][0](3) == 4
