"""Saving and loading programs: state files (JSON or pickle) and whole pickled programs.

Three formats, as in DSPy:

- state, JSON (``prog.save("x.json")``): ``dump_state()`` plus a ``"metadata"``
  entry. Safe to load from anyone: it is only data. The default to prefer.
- state, pickle (``prog.save("x.pkl")``): the same dict written with cloudpickle,
  for state JSON cannot hold (dates, pydantic values in demos). Loading runs code
  from the file, so ``load`` refuses unless called with ``allow_pickle=True``.
- program (``prog.save("dir", save_program=True)``): ``dir/program.pkl``
  (cloudpickle) and ``dir/metadata.json``; read back with ``dspex.load(dir,
  allow_pickle=True)``.

Metadata is ``{"dependency_versions": {"python", "dspex", "cloudpickle"}}``; a
file saved under other versions loads with one warning per differing version,
logged on this module's logger (files from older dspex, with the versions at
the top level of the metadata, are read too).

Secrets: keys that name a secret (``api_key``, ``password``, ...) are removed
from state before it is written, and a pickle is checked for the API keys its
LMs hold before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from dspex.errors import (
    ConfigurationError,
    PickleNotAllowedError,
    SavedFileError,
    SavedProgramImportError,
)
from dspex.observability.redact import without_secrets
from dspex.primitives.example import Example

logger = logging.getLogger(__name__)

METADATA_KEY = "metadata"
VERSIONS_KEY = "dependency_versions"
PROGRAM_FILE = "program.pkl"
METADATA_FILE = "metadata.json"
STATE_SUFFIXES = (".json", ".pkl")


def get_dependency_versions() -> dict[str, str]:
    """The versions a saved file depends on: python and cloudpickle as major.minor
    (what decides whether a pickle loads), dspex in full."""
    import cloudpickle

    import dspex

    return {
        "dspex": dspex.__version__,
        "python": _major_minor(platform.python_version()) or "unknown",
        "cloudpickle": _major_minor(cloudpickle.__version__) or "unknown",
    }


def metadata() -> dict[str, Any]:
    """The metadata entry written next to saved state or programs."""
    return {VERSIONS_KEY: get_dependency_versions()}


def check_metadata(saved: dict[str, Any], path: Path) -> None:
    """Log a warning for each dependency whose version differs from the saving one."""
    versions = saved.get(VERSIONS_KEY, saved)  # older dspex wrote the versions at the top
    if not isinstance(versions, dict):
        return
    current = get_dependency_versions()
    for name, then in versions.items():
        now = current.get(name)
        if now is None or not isinstance(then, str):
            continue  # a dependency this dspex does not track (e.g. another library's)
        if name in ("python", "cloudpickle"):
            then = _major_minor(then) or then
        if then != now:
            logger.warning(
                "There is a mismatch of %s version between the saved file and this environment: "
                "%s was saved with %s %s, this is %s %s. The loaded program may fail or behave "
                "differently; load it where it was saved, or save it again here.",
                name, path, name, then, name, now,
            )


def _major_minor(version: Any) -> str | None:
    if not isinstance(version, str):
        return None
    return ".".join(version.split(".")[:2])


@contextmanager
def pickled_by_value(modules: Iterable[ModuleType] | None) -> Iterator[None]:
    """Within the block cloudpickle writes the code of ``modules`` into the pickle
    (``register_pickle_by_value``) instead of a reference that needs them importable.
    Registrations made here are undone on exit; earlier ones stay."""
    import cloudpickle

    registered = set(cloudpickle.list_registry_pickle_by_value())
    added: list[ModuleType] = []
    try:
        for module in modules or ():
            if not isinstance(module, ModuleType):
                raise ConfigurationError(
                    f"modules_to_serialize takes imported modules (import my_module; "
                    f"modules_to_serialize=[my_module]), got {module!r}"
                )
            if module.__name__ not in registered:
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        yield
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)


def api_key_of(value: Any) -> str | None:
    """The API key an object (an LM) holds as ``api_key``, if any long enough to check."""
    key = getattr(value, "api_key", None)
    reveal = getattr(key, "get_secret_value", None)  # pydantic SecretStr
    key = reveal() if callable(reveal) else key
    # Short strings would match by accident anywhere in the pickle.
    return key if isinstance(key, str) and len(key) >= 8 else None


def api_keys_in(values: Iterable[Any]) -> list[str]:
    return [key for key in map(api_key_of, values) if key is not None]


def refuse_secrets(data: bytes, secrets: Iterable[str], what: str) -> None:
    """Raise ConfigurationError if any of ``secrets`` shows in pickled ``data``."""
    for secret in secrets:
        if secret.encode("utf-8") in data:
            raise ConfigurationError(
                f"refusing to save: the pickled {what} contain(s) an API key (an LM that "
                "keeps its key when pickled is reachable from it). Leave that LM out (for a "
                "program: save without include_lm=True, or remove the LM from that attribute; "
                "for settings: exclude_keys=[...]) and give the key in code where it is loaded"
            )


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


def serialize_object(value: Any) -> Any:
    """``value`` as JSON-ready data, recursively: pydantic models as their JSON dump (dates
    as ISO text, URLs as strings), Examples as dicts, containers item by item; anything
    else as it is (what DSPy's ``serialize_object`` does for demos)."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if isinstance(value, Example):
        return serialize_object(value.toDict())
    if isinstance(value, Mapping):
        return {key: serialize_object(item) for key, item in value.items()}
    if isinstance(value, list):
        return [serialize_object(item) for item in value]
    if isinstance(value, tuple):
        return tuple(serialize_object(item) for item in value)
    return value


def write_state(state: dict[str, Any], path: Path) -> None:
    """Write a state dict (secrets scrubbed) and metadata: JSON, or cloudpickle for .pkl."""
    if METADATA_KEY in state:
        raise ConfigurationError(
            f"cannot save: a predictor is named {METADATA_KEY!r}, which is the key the state "
            "file uses for version metadata; rename that attribute"
        )
    document = {**without_secrets(state), METADATA_KEY: metadata()}
    if path.suffix == ".pkl":
        import cloudpickle

        logger.warning(
            "Writing %s as a pickle: loading a .pkl file runs any code it holds, so it is only "
            'safe to load from a source you trust. Prefer JSON state: save("program.json").',
            path,
        )
        atomic_write(path, cloudpickle.dumps(document))
        return
    text = json.dumps(document, indent=2, ensure_ascii=False, default=json_default)
    atomic_write(path, text.encode("utf-8"))


def read_state(path: Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Read a state file (JSON, or a .pkl with ``allow_pickle``); warn on version
    mismatch; return the state only.

    Raises `SavedFileError` naming the file when it is missing, a directory, not
    valid JSON, or not a JSON object; `PickleNotAllowedError` for a .pkl without
    ``allow_pickle=True``.
    """
    if path.suffix == ".pkl":
        return _read_pickled_state(path, allow_pickle)
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


def _read_pickled_state(path: Path, allow_pickle: bool) -> dict[str, Any]:
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"Loading .pkl files can run arbitrary code, so {path} is not read without "
            "allow_pickle=True. If you saved it yourself (or trust who did), call "
            "load(path, allow_pickle=True); state saved as .json loads without it"
        )
    import cloudpickle

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SavedFileError(f"{path} does not exist (looking for a state file)") from None
    try:
        document = cloudpickle.loads(data)
    except Exception as exc:
        raise SavedFileError(
            f"{path} could not be unpickled ({type(exc).__name__}: {exc}); it loads only where "
            "the modules its values come from can be imported. If it is damaged, save the "
            "program's state again"
        ) from exc
    if not isinstance(document, dict):
        raise SavedFileError(
            f"{path} holds a {type(document).__name__}, not a dspex state (a dict of predictor "
            "names written by program.save(...))"
        )
    document = dict(document)
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


def write_program(
    program: Any,
    directory: Path,
    secrets: Iterable[str],
    modules_to_serialize: Iterable[ModuleType] | None = None,
) -> None:
    """Cloudpickle ``program`` to ``directory/program.pkl`` plus ``metadata.json``.

    ``modules_to_serialize`` are pickled by value (see `pickled_by_value`). Refuses
    (ConfigurationError, nothing written) when any of ``secrets`` appears in the
    pickled bytes, or when the program cannot be pickled.
    """
    import cloudpickle

    if directory.exists() and not directory.is_dir():
        raise ConfigurationError(
            f"{directory} exists and is a file: save_program=True writes a directory; pass a "
            "path that is a directory or does not exist yet"
        )
    try:
        with pickled_by_value(modules_to_serialize):
            data = cloudpickle.dumps(program)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"cannot pickle the program ({type(exc).__name__}: {exc}). Remove the attribute "
            "that cannot be pickled, or save only the learned state with save('program.json')"
        ) from exc
    refuse_secrets(data, secrets, "program")
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
        raise PickleNotAllowedError(
            f"Loading with pickle is not allowed without allow_pickle=True: {directory} holds a "
            "pickled program, and loading a pickle runs any code it contains. If you trust "
            "this file, call load(path, allow_pickle=True). To load only learned state (safe), "
            "build the program in code and call program.load('state.json')"
        )
    meta_file = directory / METADATA_FILE
    saved_meta: dict[str, Any] = {}
    if meta_file.is_file():
        found = _parse_json(meta_file, _read_text(meta_file, "program metadata"), "program")
        saved_meta = found if isinstance(found, dict) else {}
        check_metadata(saved_meta, directory)
    import cloudpickle

    saved_versions = saved_meta.get(VERSIONS_KEY, saved_meta)
    versions = (
        ", ".join(f"{k} {v}" for k, v in saved_versions.items())
        if isinstance(saved_versions, dict) and saved_versions
        else "unknown versions"
    )
    try:
        return cloudpickle.loads(program_file.read_bytes())
    except ModuleNotFoundError as exc:
        raise SavedProgramImportError(
            f"{program_file} refers to module {exc.name!r}, which cannot be imported here "
            f"({exc}). Make it importable where the program is loaded, or save the program "
            f"with modules_to_serialize=[{exc.name or 'that_module'}] so its code is stored "
            "in the file",
            name=exc.name,
        ) from exc
    except Exception as exc:
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
