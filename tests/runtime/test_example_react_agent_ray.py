"""examples/react_agent.py runs as its README says, attached to this session's cluster:
the agent is scored on EvalWorkers, optimized, and scores better after."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "react_agent.py"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:  # script_env wants one; the example starts its own
    with start_sim_lm() as server:
        yield server.url


def test_the_react_example_improves_its_agent_on_the_runtime(script_env: dict[str, str], tmp_path: Path) -> None:
    env = {**script_env, "DSPEX_CACHE_DIR": str(tmp_path / "lm-cache")}  # answers from this run only
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, cwd=EXAMPLE.parent,
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    scores = dict(re.findall(r"^(before|after):\s+([\d.]+)% on 60 dev questions$", done.stdout, re.M))
    assert set(scores) == {"before", "after"}, done.stdout
    assert float(scores["after"]) > float(scores["before"]), done.stdout
    demos = re.search(r"demos per predictor: \{'react': (\d+), 'extract.predict': (\d+)\}", done.stdout)
    assert demos and int(demos.group(1)) > 0 and int(demos.group(2)) > 0, done.stdout
    assert re.search(r"^example: What is .* -> \d+ \(tools: calculate, finish\)$", done.stdout, re.M), done.stdout
