"""Fixtures for streaming tests: the simulated LM over real HTTP, an empty cache per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=5) as server:
        yield server


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LMCache]:
    cache = LMCache(disk_dir=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "_default", cache)
    yield cache
    cache.close()
