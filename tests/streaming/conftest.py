"""Fixtures for streaming tests: the simulated LM over real HTTP, an empty cache per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspex.clients.cache import LMCache
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=5) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_lm_cache(isolated_cache: LMCache) -> LMCache:
    return isolated_cache  # the shared fixture (tests/conftest.py), for every test here
