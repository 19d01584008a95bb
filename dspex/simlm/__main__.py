"""`python -m dspex.simlm`: serve the simulated LM until SIGTERM.

Prints nothing on success (the parent learns the port from `--port-file`);
argparse keeps start-up light (no typer/rich import in the child).
"""

from __future__ import annotations

import argparse
import os
import sys

from dspex.simlm.core import SimCore
from dspex.simlm.faults import FaultConfig
from dspex.simlm.server import check_loopback, serve_forever


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dspex.simlm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--faults-json", default="{}", help="a FaultConfig as JSON")
    parser.add_argument(
        "--port-file", default=None, help="write the bound port here once listening"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        check_loopback(args.host)
        faults = FaultConfig.model_validate_json(args.faults_json)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    core = SimCore(
        seed=args.seed,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        faults=faults,
        api_key=os.environ.get("DSPEX_SIMLM_API_KEY"),
    )
    serve_forever(core, host=args.host, port=args.port, port_file=args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
