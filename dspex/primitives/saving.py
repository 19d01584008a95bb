"""Saving and loading programs: JSON state files and whole pickled programs.

Two formats:

- state (``prog.save("x.json")``): ``dump_state()`` as JSON plus a
  ``"metadata"`` entry. Safe to load from anyone: it is only data.
- program (``prog.save("dir", save_program=True)``): ``dir/program.pkl``
  (cloudpickle) and ``dir/metadata.json``. Loading runs arbitrary code, so
  `load` refuses unless called with ``allow_pickle=True``.

Secrets: keys that name a secret (``api_key``, ``password``, ...) are removed
from state before it is written, and a pickled program is checked for the API
keys its LMs hold before anything is written.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError
from dspex.observability.redact import without_secrets
from dspex.primitives.example import Example

METADATA_KEY = "metadata"
PROGRAM_FILE = "program.pkl"
METADATA_FILE = "metadata.json"

def metadata() -> dict[str, str]:
    """Versions that matter when reading a saved file back."""
    return {
        "dspex": _version("dspex"),
        "python": platform.python_version(),
        "cloudpickle": _version("cloudpickle"),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def check_metadata(saved: dict[str, Any], path: Path) -> None:
    """Warn when a file was saved by another dspex or Python (major.minor) version."""
    current = metadata()
    checks = {
        "dspex": (saved.get("dspex"), current["dspex"]),
        "python": (_major_minor(saved.get("python")), _major_minor(current["python"])),
    }
    for name, (then, now) in checks.items():
        if then is not None and then != now:
            warnings.warn(
                f"{path} was saved with {name} {then}, this is {name} {now}; "
                "loading may fail or behave differently",
                UserWarning,
                stacklevel=3,
            )


def _major_minor(version: Any) -> str | None:
    if not isinstance(version, str):
        return None
    return ".".join(version.split(".")[:2])


def json_default(value: Any) -> Any:
    """How `save` writes values JSON has no type for.

    Pydantic models become ``model_dump(mode="json")``, Examples and
    Predictions their dict, sets a list. Anything else is written as ``str(value)``
    (so it loads back as a string: give predictors state made of plain data).
    """
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if isinstance(value, Example):
        return value.toDict()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def write_state(state: dict[str, Any], path: Path) -> None:
    """Write a state dict (secrets scrubbed) and metadata as JSON."""
    if METADATA_KEY in state:
        raise ConfigurationError(
            f"cannot save: a predictor is named {METADATA_KEY!r}, which is the key the JSON "
            "file uses for version metadata; rename that attribute"
        )
    document = {**without_secrets(state), METADATA_KEY: metadata()}
    text = json.dumps(document, indent=2, ensure_ascii=False, default=json_default)
    atomic_write(path, text.encode("utf-8"))


def read_state(path: Path) -> dict[str, Any]:
    """Read a JSON state file; warn on version mismatch; return the state only."""
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path} does not hold a dspex state (a JSON object)")
    saved = document.pop(METADATA_KEY, None)
    if isinstance(saved, dict):
        check_metadata(saved, path)
    return document


def write_program(program: Any, directory: Path, secrets: Iterable[str]) -> None:
    """Cloudpickle ``program`` to ``directory/program.pkl`` plus ``metadata.json``.

    Refuses (ConfigurationError, nothing written) when any of ``secrets``
    appears in the pickled bytes.
    """
    import cloudpickle

    data = cloudpickle.dumps(program)
    for secret in secrets:
        if secret.encode("utf-8") in data:
            raise ConfigurationError(
                "refusing to save: the pickled program contains an API key (an LM that "
                "keeps its key when pickled is reachable from the program). Save without "
                "include_lm=True, or remove the LM from that attribute before saving"
            )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / PROGRAM_FILE, data)
    atomic_write(directory / METADATA_FILE, json.dumps(metadata(), indent=2).encode("utf-8"))


def load(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Load a whole program saved with ``save(dir, save_program=True)``.

    Unpickling runs code from the file: only pass ``allow_pickle=True`` for
    files you trust (ones you saved yourself).
    """
    directory = Path(path)
    if not allow_pickle:
        raise ConfigurationError(
            f"refusing to load {directory}: a saved program is a pickle, and loading a pickle "
            "runs any code it contains. If you trust this file, call "
            "load(path, allow_pickle=True). To load only learned state (safe), build the "
            "program in code and call program.load('state.json')"
        )
    program_file = directory / PROGRAM_FILE
    if not program_file.is_file():
        raise ConfigurationError(
            f"{directory} is not a saved program: expected {PROGRAM_FILE} inside it "
            "(written by module.save(directory, save_program=True))"
        )
    meta_file = directory / METADATA_FILE
    if meta_file.is_file():
        check_metadata(json.loads(meta_file.read_text(encoding="utf-8")), directory)
    import cloudpickle

    return cloudpickle.loads(program_file.read_bytes())


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
