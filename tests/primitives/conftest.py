from __future__ import annotations

import importlib

import pytest

# The package re-exports the `settings` object under the submodule's name, so
# reach the module itself through importlib.
settings_module = importlib.import_module("dspex.primitives.settings")


@pytest.fixture(autouse=True)
def _restore_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # configure() rebinds the module's defaults mapping; put the original back.
    monkeypatch.setattr(settings_module, "_defaults", settings_module._defaults)
    # Each test starts with no thread or task owning configure(), and leaves none.
    monkeypatch.setattr(settings_module, "_owner_thread", None)
    monkeypatch.setattr(settings_module, "_owner_task", None)
