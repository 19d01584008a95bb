"""Running a DSPy script in DSPy's own virtualenv, for the benchmarks that compare with it.

Install it with ``python -m venv /tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy
optuna``. A runner is a script that reads its config (JSON) from the file named in
``argv[1]`` and prints one ``RESULT {...}`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_PYTHON = "/tmp/dspy-venv/bin/python"


def run_in_dspy_venv(
    python: str, runner: str, config: dict[str, Any], timeout: float = 900.0
) -> dict[str, Any] | str:
    """The runner's ``RESULT`` dict, or why there is none (a str)."""
    if not Path(python).exists():
        return f"no DSPy interpreter at {python} (see benchmarks/dspy_venv.py to install one)"
    workdir = Path(tempfile.mkdtemp(prefix="dspy-bench-"))
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "runner.py").write_text(runner)
    # A local price map (no download) and a private cache (nothing reused between runs).
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(workdir / "cache")}
    try:
        done = subprocess.run(
            [python, str(workdir / "runner.py"), str(workdir / "config.json")],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        return f"DSPy did not finish within {timeout:.0f} s"
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    return f"DSPy failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}"
