"""Fixtures for retriever tests: the simulated LM on 127.0.0.1 and an isolated LM cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache
from dspex.simlm import SimLMServer, start_sim_lm


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=5)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LMCache]:
    cache = LMCache(disk_dir=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "_default", cache)
    yield cache
    cache.close()
