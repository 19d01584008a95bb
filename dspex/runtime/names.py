"""Every name the runtime registers on a Ray cluster, and the namespace they live in.

The supervision tree, the event log and the dynamic children (pools, served
modules, run coordinators) are Ray named actors in one namespace; any driver
attached to the cluster finds them by these names. They are defined here only:
every other module, the dashboard and the CLI import them from this module, so
a name cannot drift between the code that registers an actor and the code
that looks it up.

::

    dspex.root [supervisor]                ROOT_SUPERVISOR
    ├── dspex.dead_letters [worker]        DEAD_LETTERS
    ├── dspex.providers [supervisor]       PROVIDERS_SUPERVISOR: dspex.pool.<provider>.<model>.<digest>
    ├── dspex.services [supervisor]        SERVICES_SUPERVISOR:  dspex.serve.<name>.<replica>
    └── dspex.optimizers [supervisor]      OPTIMIZERS_SUPERVISOR: dspex.run.<run id>
    dspex.events (outside the tree)        EVENT_LOG_NAME

The supervisor names read like Python packages but are actor names only; they
stay as they are because a driver attaches to a running (detached) tree by
these names, and a tree started by an earlier dspex must stay reachable.
"""

from __future__ import annotations

NAMESPACE = "dspex"
"""The Ray namespace of every dspex actor."""

ROOT_SUPERVISOR = "dspex.root"
DEAD_LETTERS = "dspex.dead_letters"
PROVIDERS_SUPERVISOR = "dspex.providers"
SERVICES_SUPERVISOR = "dspex.services"
OPTIMIZERS_SUPERVISOR = "dspex.optimizers"
EVENT_LOG_NAME = "dspex.events"

POOL_PREFIX = "dspex.pool."
"""Provider pools: ``dspex.pool.<provider>.<model>.<digest of the endpoint>``."""
SERVICE_PREFIX = "dspex.serve."
"""Replicas of a served module: ``dspex.serve.<service name>.<replica>``."""
RUN_PREFIX = "dspex.run."
"""Optimization run coordinators: ``dspex.run.<run id>``."""
SIM_LM = "dspex.simlm"
"""The simulated LM the demo starts as a child of the root."""

TREE_BRANCHES = (DEAD_LETTERS, PROVIDERS_SUPERVISOR, SERVICES_SUPERVISOR, OPTIMIZERS_SUPERVISOR)
"""The root's children, in start order."""

__all__ = [
    "DEAD_LETTERS",
    "EVENT_LOG_NAME",
    "NAMESPACE",
    "OPTIMIZERS_SUPERVISOR",
    "POOL_PREFIX",
    "PROVIDERS_SUPERVISOR",
    "ROOT_SUPERVISOR",
    "RUN_PREFIX",
    "SERVICES_SUPERVISOR",
    "SERVICE_PREFIX",
    "SIM_LM",
    "TREE_BRANCHES",
]
