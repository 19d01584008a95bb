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

from dspex.errors import ConfigurationError, SavedFileError
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
    """Read a JSON state file; warn on version mismatch; return the state only.

    Raises `SavedFileError` naming the file when it is missing, a directory, not
    valid JSON, or not a JSON object.
    """
    if path.is_dir():
        hint = (
            f"it holds a whole saved program: load it with dspex.load({str(path)!r}, "
            "allow_pickle=True)"
            if (path / PROGRAM_FILE).is_file()
            else "pass the .json file that program.save(...) wrote"
        )
        raise SavedFileError(f"{path} is a directory, not a state file; {hint}")
    document = _parse_json(path, _read_text(path, "a state file"), "state")
    if not isinstance(document, dict):
        raise SavedFileError(
            f"{path} is JSON but not a dspex state (a JSON object of predictor names, "
            f"got a {type(document).__name__}); it was not written by program.save(...)"
        )
    saved = document.pop(METADATA_KEY, None)
    if isinstance(saved, dict):
        check_metadata(saved, path)
    return document


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SavedFileError(f"{path} does not exist (looking for {what})") from None
    except UnicodeDecodeError as exc:
        raise SavedFileError(
            f"{path} is not a text file (byte {exc.start} is not UTF-8), so not {what} "
            "written by program.save(...)"
        ) from exc


def _parse_json(path: Path, text: str, kind: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if kind == "state":
            advice = (
                "was it written by program.save(...)? A state file cut short or edited by "
                f"hand cannot be read: save the program's state again with "
                f"program.save({str(path)!r})"
            )
        else:
            advice = (
                "the saved program is damaged: save it again with "
                "save(directory, save_program=True)"
            )
        raise SavedFileError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"{advice}"
        ) from exc


def _is_state_file(path: Path) -> bool:
    """Whether ``path`` reads as a state file (a JSON object) written by `write_state`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict)


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
    # What kind of path this is comes first: a state file or a typo must not be
    # answered with a lecture about pickles.
    program_file = _program_file(directory)
    if not allow_pickle:
        raise ConfigurationError(
            f"refusing to load {directory}: a saved program is a pickle, and loading a pickle "
            "runs any code it contains. If you trust this file, call "
            "load(path, allow_pickle=True). To load only learned state (safe), build the "
            "program in code and call program.load('state.json')"
        )
    meta_file = directory / METADATA_FILE
    saved_meta: dict[str, Any] = {}
    if meta_file.is_file():
        found = _parse_json(meta_file, _read_text(meta_file, "program metadata"), "program")
        saved_meta = found if isinstance(found, dict) else {}
        check_metadata(saved_meta, directory)
    import cloudpickle

    try:
        return cloudpickle.loads(program_file.read_bytes())
    except Exception as exc:
        versions = ", ".join(f"{k} {v}" for k, v in saved_meta.items()) or "unknown versions"
        raise SavedFileError(
            f"{program_file} could not be unpickled ({type(exc).__name__}: {exc}). It was saved "
            f"with {versions}; it loads only where the same classes can be imported (the "
            "modules that define the program's classes are installed) with compatible "
            "versions. If the file is damaged, save the program again"
        ) from exc


def _program_file(directory: Path) -> Path:
    """``directory/program.pkl``, or `SavedFileError` saying what ``directory`` is instead."""
    written_by = (
        f"a directory holding {PROGRAM_FILE}, written by "
        "program.save(directory, save_program=True)"
    )
    if not directory.exists():
        raise SavedFileError(f"{directory} does not exist: dspex.load reads {written_by}")
    if directory.is_file():
        if directory.name == PROGRAM_FILE:
            raise SavedFileError(
                f"{directory} is the pickle inside a saved program: pass its directory, "
                f"dspex.load({str(directory.parent)!r}, allow_pickle=True)"
            )
        if _is_state_file(directory):
            raise SavedFileError(
                f"{directory} is a saved state, not a whole program: build the program in "
                f"code and call program.load({str(directory)!r})"
            )
        if directory.suffix == ".json":
            try:
                _parse_json(directory, _read_text(directory, "a state file"), "state")
                problem = "it holds JSON, but not a dspex state (a JSON object)"
            except SavedFileError as exc:
                problem = f"read as a state file for program.load, it fails too: {exc}"
            raise SavedFileError(
                f"{directory} is a JSON file, not a saved program (dspex.load reads "
                f"{written_by}); {problem}"
            )
        raise SavedFileError(
            f"{directory} is a file, not a saved program: dspex.load reads {written_by}"
        )
    program_file = directory / PROGRAM_FILE
    if not program_file.is_file():
        raise SavedFileError(f"{directory} is not a saved program: expected {written_by}")
    return program_file


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
