"""Fixtures for retriever tests: the simulated LM on 127.0.0.1 and an isolated LM cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspex.simlm import SimLMServer, start_sim_lm


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=5)
    try:
        yield server
    finally:
        server.stop()
