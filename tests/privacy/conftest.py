"""Fixtures of the privacy tests: a recording server (`privacy_helpers.RecordingServer`)
and an isolated LM cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from privacy_helpers import RecordingServer

from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    recording.start()
    try:
        yield recording
    finally:
        recording.stop()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LMCache]:
    """A fresh process-wide cache on a temporary directory, restored after the test."""
    cache = LMCache(disk_dir=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "_default", cache)
    yield cache
    cache.close()
