"""The README's code runs as written, so it cannot drift from the code.

Every ```python block runs in a fresh interpreter, in a scratch directory, with
its own run store and cache. A block that configures a real provider
(``dspex.LM("openai/gpt-4o-mini")``) runs with ``OPENAI_BASE_URL`` pointing that
model at the simulated LM, the way a user would point it at any compatible
server. Where a ``print(...)`` line's comment starts with a value (``# 42``,
``# 40.0 84.5 (dev, before and after)``), the block must print that value.

A block may be skipped only with a visible reason in an HTML comment right
before it (``<!-- not run: needs OPENAI_API_KEY -->``), and only a few may be.

Every ``dspex ...`` command in a ```bash block, and in inline code in the
prose, must exist in the CLI: ``dspex <command> --help`` succeeds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
MAX_NOT_RUN = 2
# A value a comment can promise: numbers (several, space-separated), a quoted string, a constant.
PROMISED_VALUE = re.compile(r"^(-?\d[\d.]*(\s+-?\d[\d.]*)*|True|False|None|\"[^\"]*\"|'[^']*')$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where the block starts in the README, for messages
    heading: str
    not_run: str | None  # the reason, when marked as not run


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    heading = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^```(\w+)\s*$", line)
        if fence is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marked = NOT_RUN.match(previous.strip())
        blocks.append(
            Block(
                language=fence.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                line=index + 1,
                heading=heading,
                not_run=marked.group("reason") if marked else None,
            )
        )
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.language == "python"]


def promised_output(code: str) -> list[str]:
    """The values the block's ``print(...)  # value`` comments promise, in order."""
    promised = []
    for line in code.splitlines():
        match = re.match(r"^\s*print\(.*\)\s+#\s*(?P<comment>.+)$", line)
        if match is None:
            continue
        value = match.group("comment").split(" (")[0].split(":")[0].strip()
        if PROMISED_VALUE.match(value):
            promised.append(value)
    return promised


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    from dspex.simlm import start_sim_lm

    with start_sim_lm(seed=0) as server:
        yield server.url


def block_env(tmp_path: Path, sim_url: str) -> dict[str, str]:
    cleared = ("RAY_ADDRESS", "OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(
        OPENAI_BASE_URL=sim_url,  # a real provider's model, answered by the simulated LM
        OPENAI_API_KEY="sim-local",
        DSPEX_RUNS_DB=str(tmp_path / "runs.sqlite3"),
        DSPEX_CACHE_DIR=str(tmp_path / "cache"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def test_the_readme_has_python_blocks_and_few_are_not_run() -> None:
    assert len(PYTHON) >= 3
    not_run = [b for b in BLOCKS if b.not_run is not None]
    assert len(not_run) <= MAX_NOT_RUN, [(b.line, b.not_run) for b in not_run]
    assert all(b.not_run for b in not_run), "a not-run marker must give its reason"


@pytest.mark.parametrize("block", PYTHON, ids=[f"line{b.line}-{b.heading}" for b in PYTHON])
def test_python_block_runs_and_prints_what_its_comments_say(
    block: Block, tmp_path: Path, sim_url: str
) -> None:
    if block.not_run is not None:
        pytest.skip(f"README line {block.line} is marked not run: {block.not_run}")
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=block_env(tmp_path, sim_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"README line {block.line} failed:\n{done.stderr[-3000:]}"
    printed = done.stdout.splitlines()
    promised = promised_output(block.code)
    # Each promise is one printed line, in order; prints without a promise may sit between.
    remaining = iter(printed)
    for value in promised:
        assert any(line.strip() == value for line in remaining), (
            f"README line {block.line} promises {value!r}; the block printed:\n{done.stdout}"
        )


def test_the_promise_parser_reads_values_and_ignores_descriptions() -> None:
    code = (
        "print(a)   # 42\n"
        "print(a, b)   # 40.0 84.5 (dev, before and after)\n"
        "print(c)   # 109 (zero-shot, a little off)\n"
        "print(info)   # run id, status, best score\n"
    )
    assert promised_output(code) == ["42", "40.0 84.5", "109"]


# --- the CLI commands the README mentions ------------------------------------------


def _command_path(words: list[str]) -> list[str]:
    """``["runs", "show"]`` from ``dspex runs show RUN_ID --json``: the words naming a command."""
    path = []
    for word in words:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return path


def readme_commands(text: str) -> set[tuple[str, ...]]:
    commands: set[tuple[str, ...]] = set()
    sources = [b.code for b in readme_blocks(text) if b.language == "bash"]
    # Inline code may wrap across lines in the Markdown source.
    sources += [" ".join(span.split()) for span in re.findall(r"`(dspex\s[^`]+)`", text)]
    for source in sources:
        for line in source.splitlines():
            line = line.split("#", 1)[0]
            for part in re.split(r"&&|;|\|", line):
                words = part.split()
                if words[:1] == ["dspex"]:
                    commands.add(tuple(_command_path(words[1:])))
    return commands


COMMANDS = sorted(readme_commands(README.read_text(encoding="utf-8")))


def test_the_readme_names_the_main_commands() -> None:
    assert {("demo",), ("runs", "show"), ("dashboard",), ("cluster", "start")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "dspex" for c in COMMANDS])
def test_every_dspex_command_in_the_readme_exists(command: tuple[str, ...]) -> None:
    from dspex.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"`dspex {' '.join(command)} --help` failed:\n{result.output}"
    assert f"dspex {' '.join(command)}".strip() in " ".join(result.output.split())
