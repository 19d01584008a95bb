"""examples/rag.py attached to this session's cluster (--runtime): the RAG program and the
configured retriever travel to the EvalWorkers and the optimizer's coordinator, and the
figures are those of the same run in-process."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rag.py"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:  # script_env wants one; the example starts its own
    with start_sim_lm() as server:
        yield server.url


def _figures(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--retriever", "embeddings", "--dev", "60", "--train", "30", *args],
        env=env, cwd=EXAMPLE.parent, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(re.findall(r"^(closed book|rag before|rag after): ([\d.]+)$", done.stdout, re.M))


def test_the_rag_example_on_the_runtime_matches_in_process(script_env: dict[str, str], tmp_path: Path) -> None:
    on_runtime = _figures({**script_env, "DSPEX_CACHE_DIR": str(tmp_path / "a")}, "--runtime")
    in_process = _figures({**script_env, "DSPEX_CACHE_DIR": str(tmp_path / "b")})
    assert set(on_runtime) == {"closed book", "rag before", "rag after"}, on_runtime
    assert on_runtime == in_process
    assert float(on_runtime["closed book"]) < float(on_runtime["rag before"]) < float(on_runtime["rag after"])
