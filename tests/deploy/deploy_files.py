"""The deployment files under test, and a small Dockerfile reader for checking them statically.

No Docker engine is needed: the Dockerfile is read the way the builder reads
it (continuation lines joined, comments dropped, ARG defaults substituted into
FROM) and its instructions are checked as data.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = (ROOT / "ray_cluster.yaml", DEPLOY / "ray_cluster.aws.yaml")
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def load_yaml(path: Path) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(documents) == 1, f"{path.name}: expected one YAML document, got {len(documents)}"
    assert isinstance(documents[0], dict), f"{path.name}: top level must be a mapping"
    return documents[0]


def all_yaml_files() -> list[Path]:
    return sorted([ROOT / "ray_cluster.yaml", *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


# --- Dockerfile --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str
    workdir: str  # the WORKDIR in force when the instruction runs


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: continuations joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    workdir = "/"
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # the builder drops comments even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword, args = keyword.upper(), args.strip()
        if keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args))
        instructions.append(Instruction(keyword, args, workdir))
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM may use)."""
    defaults: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def base_image(instructions: list[Instruction]) -> str:
    """The last stage's FROM image with ARG defaults substituted."""
    defaults = arg_defaults(instructions)
    image = [i for i in instructions if i.keyword == "FROM"][-1].args.split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)


def python_version_of_image(image: str) -> tuple[int, int]:
    """(3, 11) from rayproject/ray:X-py311-cpu or python:3.11-slim."""
    match = re.search(r"[-:]py3(\d{1,2})\b", image) or re.search(r"python:3\.(\d+)", image)
    assert match, f"cannot tell the Python version of base image {image!r}"
    return 3, int(match.group(1))


def env_vars(instructions: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:  # legacy form: ENV NAME value with spaces
            found[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            found[name] = value
    return found


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    destination: str  # absolute, resolved against WORKDIR
    into_directory: bool  # destination ends with "/" or there are several sources


def copies(instructions: list[Instruction]) -> list[Copy]:
    found: list[Copy] = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        *sources, target = words
        destination = posixpath.normpath(posixpath.join(instruction.workdir, target))
        found.append(Copy(tuple(sources), destination, target.endswith("/") or len(sources) > 1))
    return found


def copied_to(instructions: list[Instruction], source: str, *, is_dir: bool) -> str | None:
    """Where ``source`` (a path in the build context) lands in the image; None if never copied."""
    for copy in copies(instructions):
        for item in copy.sources:
            if item in (".", "./"):
                return posixpath.join(copy.destination, source)
            if posixpath.normpath(item) != source:
                continue
            if is_dir:
                return copy.destination  # a directory's contents go into the destination
            if copy.into_directory:
                return posixpath.join(copy.destination, posixpath.basename(source))
            return copy.destination
    return None


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes ``path``: the last matching pattern decides.

    A pattern matches a path or any of its parent directories, as in Docker.
    """
    candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = posixpath.normpath(pattern.lstrip("!"))
        if any(_glob_match(candidate, glob) for candidate in candidates):
            excluded = not negated
    return excluded


def _glob_match(path: str, glob: str) -> bool:
    if glob == "**":
        return True
    if glob.startswith("**/"):
        tail = glob[3:]
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), tail) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, glob)


def ignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- Ray versions named anywhere in the deployment ----------------------------------------


def ray_versions() -> dict[str, str]:
    """Every Ray version the deployment files pin, by where it is pinned."""
    found = {
        "Dockerfile ARG RAY_VERSION": arg_defaults(parse_dockerfile(DOCKERFILE.read_text()))[
            "RAY_VERSION"
        ]
    }
    pattern = re.compile(r"ray(?:\[default\])?==(\d+\.\d+\.\d+)|rayproject/ray:(\d+\.\d+\.\d+)")
    for path in LAUNCHER_CONFIGS:
        for match in pattern.finditer(path.read_text()):
            found[f"{path.name}: {match.group(0)}"] = match.group(1) or match.group(2)
    found["raycluster.yaml rayVersion"] = load_yaml(RAYCLUSTER)["spec"]["rayVersion"]
    found["rayjob.yaml rayVersion"] = load_yaml(RAYJOB)["spec"]["rayClusterSpec"]["rayVersion"]
    return found
