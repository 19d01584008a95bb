"""examples/gepa_on_cluster.py runs as its docstring says, attached to this session's
cluster: GEPA compiles in a coordinator and the program scores better after."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gepa_on_cluster.py"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:  # script_env wants one; the example starts its own
    with start_sim_lm() as server:
        yield server.url


def test_gepa_improves_the_program_from_a_driver_on_the_cluster(script_env: dict[str, str], tmp_path: Path) -> None:
    env = {**script_env, "DSPEX_CACHE_DIR": str(tmp_path / "lm-cache")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--run-id", "gepa-example"], env=env, cwd=EXAMPLE.parent,
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    scores = dict(re.findall(r"^(before|after):\s+([\d.]+)% on 100 dev questions$", done.stdout, re.M))
    assert float(scores["after"]) >= float(scores["before"]) + 10, done.stdout
    assert re.search(r"^run gepa-example: \d+ candidates, \d+ metric calls, status finished$", done.stdout, re.M)
