"""Where the sandbox's two parts come from, and the command that starts one.

- Deno: the binary in the ``deno`` package from PyPI (a dependency of dspex), or a
  ``deno`` on PATH when that package is absent.
- Pyodide (CPython compiled to WebAssembly): the ``pyodide`` npm package at one pinned
  version, fetched by Deno's own npm support from the npm registry into a Deno cache
  directory that only dspex uses. After that one fetch every start runs with
  ``--cached-only``: no network, ever, at execution time. The install also saves a
  snapshot of Pyodide's memory once loaded, which every process starts from.

The cache directory is ``DSPEX_SANDBOX_DIR`` when set, else ``<user cache>/dspex/deno``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dspex.errors import SandboxInstallError

PYODIDE_VERSION = "0.27.7"  # CPython 3.12; the runner imports exactly this version
SANDBOX_DIR_ENV = "DSPEX_SANDBOX_DIR"
RUNNER_PATH = Path(__file__).with_name("runner.js")
GUEST_PATH = Path(__file__).with_name("guest.py")
INSTALL_TIMEOUT_S = 300.0

# Deno flags every invocation shares: no deno.json/package.json/lockfile discovery from
# the working directory, npm packages read from the cache, never a node_modules folder.
_COMMON_FLAGS = ("--no-config", "--no-lock", "--node-modules-dir=none")


def sandbox_dir() -> Path:
    """The Deno cache directory dspex owns (made on first use)."""
    configured = os.environ.get(SANDBOX_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dspex")) / "deno"


def pyodide_dir(base: Path | None = None) -> Path:
    """The pinned Pyodide package inside the cache: the only host files the sandbox reads."""
    root = base if base is not None else sandbox_dir()
    return root / "npm" / "registry.npmjs.org" / "pyodide" / PYODIDE_VERSION


def snapshot_path(base: Path | None = None) -> Path:
    """Pyodide's memory right after it loaded, saved by `install`: a process starts from it
    in about a quarter of the time (and a seventh of the CPU) of loading Python afresh."""
    root = base if base is not None else sandbox_dir()
    return root / f"dspex-pyodide-{PYODIDE_VERSION}.snapshot"


def is_installed(base: Path | None = None) -> bool:
    return (pyodide_dir(base) / "pyodide.asm.wasm").is_file() and snapshot_path(base).is_file()


def find_deno() -> str:
    """The Deno binary: the ``deno`` PyPI package's, else one on PATH."""
    try:
        import deno  # the PyPI package that ships the binary

        return str(deno.find_deno_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("deno")
        if found:
            return found
    raise SandboxInstallError(
        "no Deno binary found: install the `deno` package (`pip install deno`, a dependency "
        "of dspex) or put a Deno 2.x `deno` on PATH"
    )


def deno_env(base: Path) -> dict[str, str]:
    """The whole environment a Deno process gets: its cache and nothing of the caller's
    (no API keys, no proxies); the sandbox cannot read environment variables anyway."""
    env = {
        "DENO_DIR": str(base),
        "DENO_NO_UPDATE_CHECK": "1",
        "DENO_NO_PACKAGE_JSON": "1",
        "NO_COLOR": "1",
    }
    if sys.platform == "win32":  # Deno needs these to find its own files there
        for name in ("SYSTEMROOT", "USERPROFILE", "TEMP"):
            if name in os.environ:
                env[name] = os.environ[name]
    return env


def install(base: Path | None = None, *, quiet: bool = True) -> Path:
    """Fetch the pinned Pyodide into the cache (from the npm registry, nowhere else).

    Idempotent: returns at once when it is there. Raises `SandboxInstallError` with
    Deno's own message when the fetch fails.
    """
    root = base if base is not None else sandbox_dir()
    if is_installed(root):
        return pyodide_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    if not (pyodide_dir(root) / "pyodide.asm.wasm").is_file():
        _fetch(root, quiet)
    _make_snapshot(root)
    return pyodide_dir(root)


def _fetch(root: Path, quiet: bool) -> None:
    command = [find_deno(), "cache", *_COMMON_FLAGS, str(RUNNER_PATH)]
    # The fetch runs with the caller's environment (proxies, CA bundles such as
    # NODE_EXTRA_CA_CERTS / SSL_CERT_FILE, DENO_CERT) pointed at dspex's cache.
    env = {**os.environ, **deno_env(root)}
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=quiet,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxInstallError(f"fetching Pyodide {PYODIDE_VERSION} failed: {exc}") from exc
    if done.returncode != 0 or not (pyodide_dir(root) / "pyodide.asm.wasm").is_file():
        detail = (done.stderr or "").strip()[-2000:] if quiet else f"exit code {done.returncode}"
        raise SandboxInstallError(
            f"fetching Pyodide {PYODIDE_VERSION} from the npm registry into {root} failed "
            f"({detail}); run `dspex sandbox install` where the registry can be reached, "
            f"or set {SANDBOX_DIR_ENV} to a directory where it was installed"
        )


def _make_snapshot(root: Path) -> None:
    """Load Pyodide once (offline) and save its memory; written aside, then renamed, so a
    concurrent start never reads half a file."""
    target = snapshot_path(root)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    command = [
        find_deno(),
        "run",
        *_COMMON_FLAGS,
        "--cached-only",
        "--no-prompt",
        f"--allow-read={os.path.realpath(pyodide_dir(root))}",
        f"--allow-write={partial}",
        str(RUNNER_PATH),
        "--make-snapshot",
        str(partial),
    ]
    try:
        done = subprocess.run(
            command, env=deno_env(root), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
        if done.returncode != 0 or not partial.is_file():
            raise SandboxInstallError(
                f"saving a Pyodide snapshot into {root} failed: {(done.stderr or '').strip()[-2000:]}"
            )
        os.replace(partial, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxInstallError(f"saving a Pyodide snapshot into {root} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandbox process may use. ``memory_limit_mb`` caps the WebAssembly memory
    that holds everything the sandboxed Python allocates (past it Python raises
    MemoryError); ``js_heap_mb`` caps V8's JavaScript heap (past it the process dies)."""

    memory_limit_mb: int = 1024
    js_heap_mb: int = 256
    read_paths: tuple[str, ...] = ()


def deno_command(limits: SandboxLimits, base: Path | None = None) -> list[str]:
    """The command for one sandbox process: read access to Pyodide's files and the
    opted-in paths only; no net, env, write, run, ffi or sys permission; never a prompt."""
    root = base if base is not None else sandbox_dir()
    snapshot = os.path.realpath(snapshot_path(root))
    readable = [os.path.realpath(pyodide_dir(root)), snapshot, *limits.read_paths]
    v8_flags = [
        # 64 KiB wasm pages: memory.grow past this fails, which Python sees as MemoryError.
        f"--wasm-max-mem-pages={max(1, limits.memory_limit_mb) * 16}",
        f"--max-old-space-size={max(16, limits.js_heap_mb)}",
    ]
    return [
        find_deno(),
        "run",
        *_COMMON_FLAGS,
        "--cached-only",
        "--no-prompt",
        # Denied anyway without an --allow; said outright so no later flag can widen them.
        "--deny-net",
        "--deny-env",
        "--deny-run",
        "--deny-ffi",
        "--deny-write",
        "--deny-sys",
        f"--allow-read={','.join(readable)}",
        f"--v8-flags={','.join(v8_flags)}",
        str(RUNNER_PATH),
        "--snapshot",
        snapshot,
    ]
