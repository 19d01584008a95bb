"""Fixtures for the supervision tests on Ray (the cluster comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from supervision_helpers import ON_HEAD

from dspex.runtime.supervision import ChildSpec


class Roots:
    """Starts root supervisors for a test and stops them afterwards."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def start(self, name: str, children: Sequence[ChildSpec] = (), **settings: Any) -> Any:
        from dspex.runtime.supervision import start_supervisor

        settings.setdefault("actor_options", ON_HEAD)
        handle = start_supervisor(name, children, **settings)
        self.handles.append(handle)
        return handle

    def stop_all(self) -> None:
        from dspex.runtime.supervision import stop_supervisor

        for handle in reversed(self.handles):
            stop_supervisor(handle, timeout=60)  # a root the test made exit is just killed


@pytest.fixture
def roots(ray_cluster: Any) -> Iterator[Roots]:
    roots = Roots()
    try:
        yield roots
    finally:
        roots.stop_all()
