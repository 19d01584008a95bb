"""How the runtime plugs into the seams of the functional core.

The core never asks whether Ray is up; it runs whatever is registered in its
seams. ``dspex.init()`` calls `install` and ``dspex.shutdown()`` calls
`uninstall`:

- evaluation runner (`dspex.evaluate.runners`): ``Evaluate`` fans out to
  EvalWorker actors by default (``runner="ray"``);
- compile backend (`dspex.optimizers.backends`): ``compile`` runs in an
  OptimizationCoordinator actor by default (``coordinator=True``);
- batch runner (`dspex.primitives.parallel`): ``Module.batch`` goes through the
  evaluation runner, so it fans out to EvalWorkers too;
- events (`dspex.observability.events`): this process's events are forwarded to
  the cluster's event log, and subscribers can receive other processes' events.

Loading the modules that implement a runner or backend registers it by name
(so ``runner="ray"`` and ``coordinator=True`` work wherever the runtime is
loaded, e.g. inside a coordinator actor); `install` makes them the defaults.
Ray workers keep the in-process defaults: an EvalWorker or a coordinator runs
its own work where it is.
"""

from __future__ import annotations

from dspex.evaluate.batch import run_batch
from dspex.evaluate.runners import set_default_runner
from dspex.optimizers.backends import COORDINATOR, set_default_compile_backend
from dspex.primitives.parallel import set_batch_runner


def install() -> None:
    """Make the runtime's runner and compile backend the defaults of this process."""
    from dspex.runtime import runs
    from dspex.runtime.evaluation import ray_runner
    from dspex.runtime.supervision import events

    del ray_runner, runs, events  # imported for their registrations
    set_default_runner("ray")
    set_default_compile_backend(COORDINATOR)
    set_batch_runner(run_batch)


def uninstall() -> None:
    """Put the in-process defaults back (what a process without the runtime uses)."""
    set_default_runner(None)
    set_default_compile_backend(None)
    set_batch_runner(None)


__all__ = ["install", "uninstall"]
