"""Running a user's script (tests/runtime/scripts/) as a second driver of the session's
tree: one phase per run, its result read from the ``RESULT {json}`` line it prints."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any


def run_phase(script: Path, env: dict[str, str], phase: str, timeout: float) -> dict[str, Any]:
    """Run ``script PHASE RUN_ID``; the dict its last RESULT line holds."""
    done = subprocess.run(
        [sys.executable, str(script), phase, uuid.uuid4().hex[:8]],
        env=env, cwd=script.parent, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))
