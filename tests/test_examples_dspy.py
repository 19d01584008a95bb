"""The DSPy-style examples run as real scripts and print what they promise.

Each script is a DSPy program whose only dspex line is ``import dspex as dspy``
(plus how it gets its LM). They run in a fresh interpreter against one simulated
LM started here on 127.0.0.1, with the network variables cleared so nothing else
could answer, and their printed figures are checked: the optimized score beats
the baseline, and programs loaded from disk give the saved program's answers.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RAG = EXAMPLES / "dspy_rag.py"
CLASSIFY = EXAMPLES / "dspy_classify.py"
TIMEOUT_SECONDS = 120

# Loaded into each script's interpreter: any connection off 127.0.0.1 is refused
# and written down, so a script that reached for the network fails this test.
NETWORK_GUARD = """
import os, socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _check(address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
            and not host.startswith("/"):
        with open(os.environ["DSPEX_TEST_NETWORK_LOG"], "a") as log:
            log.write(repr(address) + "\\n")
        raise OSError("network access outside 127.0.0.1 is not allowed in this test")


def connect(self, address):
    _check(address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(address)
    return _connect_ex(self, address)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
"""


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    from dspex.simlm import start_sim_lm

    with start_sim_lm(seed=0) as server:
        yield server.url


def script_env(tmp_path: Path) -> dict[str, str]:
    cleared = (
        "RAY_ADDRESS",
        "OPENAI_API_BASE",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "LM_API_BASE",
        "LM_MODEL",
    )
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    guard = tmp_path / "network_guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD, encoding="utf-8")
    # The scripts import this checkout's dspex, whatever is installed.
    repo = str(EXAMPLES.parent)
    paths = (str(guard), repo, env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["DSPEX_TEST_NETWORK_LOG"] = str(tmp_path / "network.log")
    env.update(
        DSPEX_RUNS_DB=str(tmp_path / "runs.sqlite3"),
        DSPEX_CACHE_DIR=str(tmp_path / "cache"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def run_script(script: Path, tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=script_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    network_log = tmp_path / "network.log"
    reached = network_log.read_text(encoding="utf-8") if network_log.exists() else ""
    assert reached == "", f"{script.name} tried to reach the network: {reached}"
    return done.stdout


def figure(output: str, label: str) -> str:
    """The value printed after ``label:`` (the line must be there)."""
    match = re.search(rf"^{re.escape(label)}: (.+)$", output, re.MULTILINE)
    assert match is not None, f"no {label!r} line in:\n{output}"
    return match.group(1).strip()


@pytest.mark.parametrize("script", [RAG, CLASSIFY], ids=lambda p: p.name)
def test_the_only_dspex_import_is_the_dspy_alias_and_the_simulated_lm(script: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    dspex_imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dspex_imports += [(a.name, a.asname) for a in node.names if a.name.startswith("dspex")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dspex"):
            dspex_imports += [(f"{node.module}.{a.name}", a.asname) for a in node.names]
    assert sorted(dspex_imports) == [("dspex", "dspy"), ("dspex.simlm.start_sim_lm", None)]


def test_rag_example_improves_on_its_baseline(sim_url: str, tmp_path: Path) -> None:
    output = run_script(RAG, tmp_path, "--api-base", sim_url, "--model", "openai/sim-1")
    before = float(figure(output, "Dev score before"))
    after = float(figure(output, "Dev score after"))
    assert 0.0 < before < 100.0
    assert after > before, output
    assert int(figure(output, "Demos in the compiled program")) > 0
    # The retriever found the passage about the kingdom the first question names.
    kingdom = re.search(r"kingdom of (\w+)", figure(output, "Question")).group(1)  # type: ignore[union-attr]
    assert kingdom in figure(output, "Top passage")


def test_classify_example_improves_and_loads_back_the_same_program(
    sim_url: str, tmp_path: Path
) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    output = run_script(CLASSIFY, tmp_path, "--api-base", sim_url, "--output-dir", str(saved))
    before = float(figure(output, "Dev accuracy before"))
    after = float(figure(output, "Dev accuracy after"))
    assert after > before, output
    assert figure(output, "Loaded from JSON agrees") == "30/30"
    assert figure(output, "Loaded whole program agrees") == "30/30"
    assert figure(output, "Demos kept") == "4 saved, 4 loaded"
    assert (saved / "sentiment.json").is_file()
    assert (saved / "sentiment_program" / "program.pkl").is_file()
    # No secret and no endpoint of this machine in what was saved.
    state = (saved / "sentiment.json").read_text(encoding="utf-8")
    assert "127.0.0.1" not in state and "api_key" not in state


def test_examples_start_their_own_simulated_lm_without_an_api_base(tmp_path: Path) -> None:
    # `python examples/dspy_rag.py` on a fresh machine: no key, no server given.
    output = run_script(RAG, tmp_path)
    assert float(figure(output, "Dev score after")) > float(figure(output, "Dev score before"))


def test_the_network_guard_catches_a_script_that_reaches_out(tmp_path: Path) -> None:
    # 203.0.113.0/24 is reserved for documentation; the guard refuses before any packet.
    script = tmp_path / "reaches_out.py"
    script.write_text(
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('203.0.113.7', 80), timeout=0.5)\n"
        "except OSError:\n"
        "    pass\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="tried to reach the network"):
        run_script(script, tmp_path)
