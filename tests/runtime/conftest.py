"""Fixtures for tests that run a user's script as a second driver of this session's tree."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex import runtime


@pytest.fixture(scope="module")
def tree(ray_cluster: Any) -> Iterator[Any]:
    """The dspex tree up on the session's cluster for one test module."""
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        yield ray_cluster
    finally:
        runtime.shutdown(stop_tree=True)


@pytest.fixture
def script_env(tree: Any, sim_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment a script attaches to the tree with (the module defines ``sim_url``)."""
    token = tmp_path / "token"
    token.write_text(uuid.uuid4().hex)  # a cluster without auth ignores the token it is sent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ADDRESS=tree.address,
        RAY_AUTH_TOKEN_PATH=str(token),
        SIM_LM_URL=sim_url,
        DSPEX_RUNS_DB=str(tmp_path / "runs.sqlite3"),
    )
    return env
