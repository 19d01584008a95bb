from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dash_helpers import ClientFactory, NoRuntime

from dspex.dashboard.server import create_app
from dspex.optimizers.run_store import RunStore


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


@pytest.fixture
def writer(store: RunStore) -> RunStore:
    """A second handle on the same file, as an optimizer in another process would have."""
    return RunStore(store.path)


@pytest.fixture
async def dashboard(store: RunStore) -> AsyncIterator[ClientFactory]:
    """Starts dashboards on the test store (fast polling) and closes them after the test."""
    clients: list[TestClient] = []

    async def start(**options: Any) -> TestClient:
        options = {"poll_interval": 0.05, "runtime_interval": 0.05, "sources": NoRuntime(), **options}
        client = TestClient(TestServer(create_app(store, **options)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
