"""deploy/Dockerfile, read statically: it installs dspex the way the README does."""

from __future__ import annotations

import posixpath
import re

import pytest
from deploy_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
    base_image,
    copied_to,
    env_vars,
    ignore_patterns,
    ignored,
    parse_dockerfile,
    python_version_of_image,
)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def readme_install_target() -> str:
    """What the README's set-up step installs: ``.`` in ``pip install . && dspex demo``."""
    match = re.search(r"^\s*pip install (\S+)", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert match, "README.md has no `pip install ...` line"
    return match.group(1)


def package_files() -> list[str]:
    """What the package build reads: pyproject.toml, its readme file, the package directory."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.MULTILINE)
    return ["pyproject.toml", *([readme.group(1)] if readme else []), "dspex"]


def install_runs(instructions: list[Instruction], target: str) -> list[Instruction]:
    pattern = re.compile(rf"\bpip install\s+(?:-\S+\s+)*{re.escape(target)}(?=\s|$)")
    return [i for i in instructions if i.keyword == "RUN" and pattern.search(i.args)]


def test_base_image_has_a_supported_python(instructions: list[Instruction]) -> None:
    image = base_image(instructions)
    assert "$" not in image, f"unresolved ARG in FROM {image!r}"
    assert python_version_of_image(image) >= (3, 10)


def test_installs_what_the_readme_installs(instructions: list[Instruction]) -> None:
    target = readme_install_target()
    assert target == "."
    runs = install_runs(instructions, target)
    assert len(runs) == 1, "expected one RUN pip install . (the README's install)"
    assert "-e" not in runs[0].args.split(), "an editable install would point at the copied sources"


def test_copies_the_project_where_pip_install_runs(instructions: list[Instruction]) -> None:
    run = install_runs(instructions, readme_install_target())[0]
    for source in package_files():
        landed = copied_to(instructions, source, is_dir=(ROOT / source).is_dir())
        assert landed is not None, f"{source} is never copied into the image"
        assert landed == posixpath.join(run.workdir, source), (
            f"{source} lands in {landed}, but pip install . runs in {run.workdir}"
        )
    copy_index = max(i for i, ins in enumerate(instructions) if ins.keyword == "COPY")
    assert instructions.index(run) > copy_index, "pip install . must run after the COPYs"


def test_usage_stats_are_off(instructions: list[Instruction]) -> None:
    assert env_vars(instructions).get("RAY_USAGE_STATS_ENABLED") == "0"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = ignore_patterns(DOCKERIGNORE)
    for source in [*package_files(), "dspex/__init__.py"]:
        assert not ignored(source, patterns), f"{source} is excluded from the build context"
    for junk in [
        ".git/config",
        "dspex/__pycache__/cli.cpython-311.pyc",
        "tests/test_end_to_end.py",
    ]:
        assert ignored(junk, patterns), f"{junk} should stay out of the build context"


def test_dockerfile_reader_follows_builder_rules() -> None:
    """The reader the checks above rely on: continuations, comments, ARG, WORKDIR, ENV forms."""
    text = (
        "ARG BASE=3.12\n"
        "FROM python:${BASE}-slim\n"
        "ENV A=1 \\\n"
        "    # a comment inside a continuation is dropped\n"
        "    B=two\n"
        "ENV LEGACY some value\n"
        "WORKDIR /app\n"
        "COPY --chown=1000 pyproject.toml README.md ./\n"
        "COPY src ./pkg\n"
        "RUN pip install --no-deps .\n"
    )
    parsed = parse_dockerfile(text)
    assert [i.keyword for i in parsed] == [
        "ARG",
        "FROM",
        "ENV",
        "ENV",
        "WORKDIR",
        "COPY",
        "COPY",
        "RUN",
    ]
    assert python_version_of_image(base_image(parsed)) == (3, 12)
    assert env_vars(parsed) == {"A": "1", "B": "two", "LEGACY": "some value"}
    assert copied_to(parsed, "README.md", is_dir=False) == "/app/README.md"
    assert copied_to(parsed, "src", is_dir=True) == "/app/pkg"
    assert copied_to(parsed, "missing", is_dir=False) is None
    assert install_runs(parsed, ".")[0].workdir == "/app"
    assert ignored("a/b.pyc", ["**/*.pyc"]) and not ignored("a/b.py", ["**", "!a"])
