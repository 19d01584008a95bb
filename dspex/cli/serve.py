"""`dspex serve module:program`: serve a program over HTTP until interrupted.

Imports the program (a module path or a ``.py`` file, then the attribute; a class is
instantiated without arguments), starts ``--replicas`` supervised replicas and the
HTTP ingress on the cluster (``--address``, $RAY_ADDRESS, or a fresh local Ray),
prints the URL, and stops the service on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dspex.cli.common import ExitCode, exit_codes_help, fail, note

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

EPILOG = exit_codes_help(
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.USAGE,
    ExitCode.UNREACHABLE,
    ExitCode.AUTH,
    overrides={
        ExitCode.FAILED: "the program could not be served (name taken, port in use, ...)",
        ExitCode.USAGE: "the program could not be imported",
    },
)


def serve(
    target: Annotated[
        str,
        typer.Argument(help="The program: module:attribute or path/to/file.py:attribute."),
    ],
    replicas: Annotated[int, typer.Option(min=1, help="Replicas to run the program on.")] = 1,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    name: Annotated[
        Optional[str], typer.Option(help="Service name, the URL path (default: the attribute's name).")
    ] = None,
    address: Annotated[
        Optional[str],
        typer.Option(help="Ray cluster to serve on (default: $RAY_ADDRESS, else a fresh local Ray)."),
    ] = None,
) -> None:
    """Serve a program over HTTP: POST its input fields as JSON, get its outputs as JSON.

    Examples:

        dspex serve myapp.qa:program --replicas 2 --port 8000

        curl -s localhost:8000/program -d '{"question": "What is 2+2?"}'
    """
    from dspex import runtime
    from dspex.runtime import ClusterAuthError, ClusterUnreachableError
    from dspex.runtime.serve import serve as serve_program

    program, attribute = _load(target)
    service = name or attribute
    try:
        runtime.init(address)
    except ClusterAuthError as exc:
        fail(str(exc), ExitCode.AUTH)
    except ClusterUnreachableError as exc:
        fail(str(exc), ExitCode.UNREACHABLE)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        try:
            handle = serve_program(program, name=service, replicas=replicas, http=True, host=host, port=port)
        except Exception as exc:
            fail(f"cannot serve {target}: {type(exc).__name__}: {exc}", ExitCode.FAILED)
        # The one line a script waits for: stdout, flushed.
        print(f"serving {service} ({replicas} replica(s)) at {handle.url}", flush=True)
        note("POST the input fields as JSON; Ctrl-C stops the service")
        stop.wait()
        handle.stop()
    finally:
        runtime.shutdown()


def _load(target: str) -> tuple[Any, str]:
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        fail(f"expected module:attribute or file.py:attribute, got {target!r}", ExitCode.USAGE)
    try:
        module = _import(module_name)
        found = getattr(module, attribute)
    except AttributeError:
        fail(f"{module_name} has no attribute {attribute!r}", ExitCode.USAGE)
    except Exception as exc:  # the user's module failed to import
        fail(f"cannot import {module_name}: {type(exc).__name__}: {exc}", ExitCode.USAGE)
    return (found() if inspect.isclass(found) else found), attribute


def _import(module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        _send_by_value(module)
        return module
    sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to the caller
    module = importlib.import_module(module_name)
    if Path(getattr(module, "__file__", "") or "").resolve().is_relative_to(Path.cwd()):
        _send_by_value(module)
    return module


def _send_by_value(module: Any) -> None:
    # The replicas may run where the user's file is not importable: ship its code.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
