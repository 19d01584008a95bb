"""examples/streaming.py runs as a script and prints each field as it streams (in-process
mode here; the served mode is covered by tests/runtime/test_serve_stream_ray.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "streaming.py"


def test_the_streaming_example_prints_the_fields_as_they_stream() -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1]), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--in-process"], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("  reasoning: ") == 2 and out.count("  answer: ") == 2
    assert "-> 'Answer for: Why is the sky blue?'" in out
    assert "[[" not in out
