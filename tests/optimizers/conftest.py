"""Fixtures for optimizer tests: the simulated LM in-process, isolated run store and cache.

The simulated LM is an oracle over bundled datasets: deterministic for a given
prompt, temperature and seed, and more often right with correct demos, so an
optimizer's improvement is real and reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.optimizers.run_store import RunStore
from dspex.primitives.settings import settings
from dspex.simlm import SimTransport, datasets


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs opened without store= and any cache use land in this test's folder.
    monkeypatch.setenv("DSPEX_RUNS_DB", str(tmp_path / "default-runs.sqlite3"))
    monkeypatch.setenv("DSPEX_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


@pytest.fixture
def sim() -> SimTransport:
    return SimTransport(seed=0)


@pytest.fixture
def lm(sim: SimTransport) -> Iterator[Any]:
    """The simulated LM as the process default (no cache: every call reaches the oracle)."""
    model = dspex.LM("openai/sim-lm", api_base=sim.url, transport=sim, cache=False)
    previous = settings.lm
    dspex.configure(lm=model)
    yield model
    dspex.configure(lm=previous)


def arithmetic(split: str, n: int | None = None) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)  # type: ignore[arg-type]
    examples = [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]
    return examples[:n] if n is not None else examples


def exact_answer(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


@pytest.fixture
def exact() -> Any:
    """The metric: the predicted answer equals the gold one."""
    return exact_answer


@pytest.fixture
def train() -> list[dspex.Example]:
    return arithmetic("train", 40)


@pytest.fixture
def dev() -> list[dspex.Example]:
    return arithmetic("dev", 100)


@pytest.fixture(scope="module")
def optimizers(ray_cluster: Any, http_lm: Any) -> Iterator[None]:
    """Stops the standalone ``dspex.optimizers`` supervisor if the module's tests started it
    (the module defines ``http_lm``, the LM its coordinators use)."""
    import contextlib

    from dspex.runtime.coordinator import OPTIMIZERS_SUPERVISOR
    from dspex.runtime.supervision import get_supervisor, stop_supervisor

    try:
        get_supervisor(OPTIMIZERS_SUPERVISOR)
        existed = True
    except ValueError:
        existed = False
    yield
    if not existed:
        with contextlib.suppress(ValueError):  # already gone
            stop_supervisor(OPTIMIZERS_SUPERVISOR, timeout=60)
