"""`dspex sandbox install` and `dspex sandbox check`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sandbox import installed_test_sandbox


@pytest.fixture(scope="module")
def sandbox_dir() -> Iterator[Path]:
    with installed_test_sandbox() as path:
        yield path


def _dspex(*args: str, sandbox: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSPEX_SANDBOX_DIR": str(sandbox)}
    return subprocess.run(
        [sys.executable, "-m", "dspex.cli", "sandbox", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_install_reports_an_existing_install_and_check_runs_python(sandbox_dir: Path) -> None:
    done = _dspex("install", "--json", sandbox=sandbox_dir)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["already_installed"] is True
    assert facts["path"].startswith(str(sandbox_dir))
    checked = _dspex("check", sandbox=sandbox_dir)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("sandbox ok: Python 3.")


def test_check_without_an_install_fails_and_says_what_to_run(tmp_path: Path) -> None:
    done = _dspex("check", sandbox=tmp_path / "empty")
    assert done.returncode == 1
    assert "dspex sandbox install" in done.stderr
    assert not (tmp_path / "empty").exists()  # check never fetches anything
