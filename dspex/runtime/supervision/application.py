"""The dspex application tree: what ``dspex.init()`` starts on a cluster.

::

    dspex.root [supervisor one_for_one]       detached, on the head node
    ├── dspex.dead_letters [worker]           DeadLetterQueue
    ├── dspex.providers [supervisor]          provider pools, added on first use
    ├── dspex.services [supervisor]           ModuleActor replicas from dspex.serve()
    └── dspex.optimizers [supervisor]         OptimizationCoordinators, added by name

The event log (``dspex.events``) is started before the root and stays outside
the tree: supervisors write their own start events into it, so it must exist
first, and it must outlive a stop of the tree, because it holds the history
that explains the stop (its ``child.exited`` events). Ray revives it if it dies.

Every driver finds the same tree by name: ``start_root`` attaches to a live
root and creates one only when there is none (two drivers racing end up with
the same root). The children of ``providers``, ``services`` and
``optimizers`` are added at run time with ``start_child``; a restart of one of
those supervisors starts it empty, and its users recreate what they need (pools
are recreated by the next request; a service's handle reports the replicas
gone).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from dspex.runtime import RuntimeNotRunningError
from dspex.runtime.names import (
    DEAD_LETTERS,
    NAMESPACE,
    OPTIMIZERS_SUPERVISOR,
    PROVIDERS_SUPERVISOR,
    ROOT_SUPERVISOR,
    SERVICES_SUPERVISOR,
    TREE_BRANCHES,
)
from dspex.runtime.supervision import events
from dspex.runtime.supervision.child_spec import ChildSpec
from dspex.runtime.supervision.dead_letters import DeadLetter, DeadLetterQueue
from dspex.runtime.supervision.errors import ChildStartError, SupervisorStoppedError
from dspex.runtime.supervision.supervisor import start_supervisor, stop_supervisor, supervisor_spec

logger = logging.getLogger(__name__)

# The tree's names live in dspex.runtime.names; these aliases keep this module's API.
PROVIDERS = PROVIDERS_SUPERVISOR
SERVICES = SERVICES_SUPERVISOR
OPTIMIZERS = OPTIMIZERS_SUPERVISOR
CHILDREN = TREE_BRANCHES  # start order

DEAD_LETTER_CAPACITY = 10_000
START_TIMEOUT = 120.0  # the root and its four children: a few seconds, more on a busy cluster
STOP_TIMEOUT = 120.0
NAME_RELEASE_TIMEOUT = 10.0  # how long a stop waits for Ray to free the root's name
CALL_TIMEOUT = 30.0
POLL_INTERVAL = 0.05

# Infrastructure takes no CPU slot (it would starve evaluation workers on a
# small cluster) and lives on the head node, which only dies with the cluster.
HEAD_NODE: dict[str, Any] = {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}}
# The root gives up after 3 restarts of a child in 30 s; the dynamic
# supervisors tolerate more, since their children (endpoints, user programs)
# fail more often than the infrastructure does. A supervisor that gives up is
# restarted empty by the root, losing its dynamic children: for services, one
# poison request costs 1 + retries replica restarts, hence the widest margin.
ROOT_INTENSITY: dict[str, Any] = {"max_restarts": 3, "max_seconds": 30.0}
BRANCH_INTENSITY: dict[str, dict[str, Any]] = {
    PROVIDERS_SUPERVISOR: {"max_restarts": 10, "max_seconds": 60.0},
    SERVICES_SUPERVISOR: {"max_restarts": 30, "max_seconds": 60.0},
    OPTIMIZERS_SUPERVISOR: {"max_restarts": 10, "max_seconds": 60.0},
}


def root_children() -> list[ChildSpec]:
    """The root's children, in start order."""
    queue = ChildSpec(
        name=DEAD_LETTERS,
        cls=DeadLetterQueue,
        kwargs={"capacity": DEAD_LETTER_CAPACITY},
        actor_options=HEAD_NODE,
    )
    branches = [
        supervisor_spec(name, (), actor_options=HEAD_NODE, **intensity)
        for name, intensity in BRANCH_INTENSITY.items()
    ]
    return [queue, *branches]


# --- starting and stopping ---------------------------------------------------------


def start_root(timeout: float = START_TIMEOUT) -> Any:
    """The root supervisor's handle: the live one if any driver started it, else a new one."""
    return ensure_root(timeout)[0]


def ensure_root(timeout: float = START_TIMEOUT) -> tuple[Any, bool]:
    """``(root handle, created)``: ``created`` is True when this call started the tree."""
    deadline = time.monotonic() + timeout
    while True:
        root = _live_root(deadline)
        if root is not None:
            events.connect_event_log()  # this driver's events go to the same log
            return root, False
        _retire_standalone_optimizers()
        try:
            root = start_supervisor(
                ROOT_SUPERVISOR,
                root_children(),
                detached=True,  # outlives the driver: a second driver attaches by name
                actor_options=HEAD_NODE,
                event_log=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                **ROOT_INTENSITY,
            )
            return root, True
        except ChildStartError as exc:
            if not _name_taken(exc) or time.monotonic() >= deadline:
                raise
            # Another driver created the root between our look-up and our create.
            time.sleep(POLL_INTERVAL)


def stop_root(root: Any = None, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the tree: the root stops its children in reverse start order
    (optimizers, services, providers, dead letters), each supervisor its own
    children first. Returns once Ray has released the root's name."""
    handle = root if root is not None else find_root()
    if handle is None:
        return
    stop_supervisor(handle, timeout=timeout)
    _wait_name_released(ROOT_SUPERVISOR, handle, NAME_RELEASE_TIMEOUT)


def find_root() -> Any | None:
    """The root supervisor's handle, or None when no tree runs on this cluster."""
    return named_actor(ROOT_SUPERVISOR)


def named_actor(name: str) -> Any | None:
    """The actor registered as ``name`` in the dspex namespace, or None."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # Ray's "no such actor"
        return None


def _retire_standalone_optimizers() -> None:
    """Stop an idle ``dspex.optimizers`` started without the tree (``compile(coordinator=True)``
    before ``dspex.init()``), so the tree can take its name."""
    try:
        handle = ray.get_actor(OPTIMIZERS_SUPERVISOR, namespace=NAMESPACE)
    except ValueError:
        return
    counts = ray.get(handle.count_children.remote(), timeout=30)
    if counts.active:
        from dspex.errors import ConfigurationError

        raise ConfigurationError(
            f"a standalone {OPTIMIZERS_SUPERVISOR!r} supervisor is running {counts.active} optimization run(s); "
            "let them finish (or stop them with `dspex runs cancel`) before starting the dspex tree"
        )
    stop_supervisor(handle, timeout=STOP_TIMEOUT)
    _wait_name_released(OPTIMIZERS_SUPERVISOR, handle, NAME_RELEASE_TIMEOUT)


def _live_root(deadline: float) -> Any | None:
    """An answering root, or None; a dead or stopped root is killed to free its name."""
    root = find_root()
    if root is None:
        return None
    try:
        # ready() waits while the root is still starting its children (another
        # driver's start in progress) and answers at once afterwards.
        ray.get(root.ready.remote(), timeout=max(deadline - time.monotonic(), 1.0))
        return root
    except (RayActorError, SupervisorStoppedError):
        logger.info("dspex: replacing a dead or stopped %s", ROOT_SUPERVISOR)
    except GetTimeoutError:
        raise ChildStartError(ROOT_SUPERVISOR, "the existing root did not answer in time") from None
    ray.kill(root, no_restart=True)
    _wait_name_released(ROOT_SUPERVISOR, root, NAME_RELEASE_TIMEOUT)
    return None


def _name_taken(exc: ChildStartError) -> bool:
    return exc.child == ROOT_SUPERVISOR and "already running" in exc.reason


def _wait_name_released(name: str, handle: Any, timeout: float) -> None:
    # ray.kill returns before the GCS frees the name; a start right after a
    # stop would otherwise find the dead actor under it.
    dead_id = handle._actor_id.hex()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = named_actor(name)
        if holder is None or holder._actor_id.hex() != dead_id:
            return
        time.sleep(POLL_INTERVAL)
    logger.warning("dspex: %s still registered %.0fs after it was stopped", name, timeout)


# --- dead letters -------------------------------------------------------------------


def dead_letter_queue() -> Any:
    """The cluster's dead-letter queue actor; raises when the runtime is not running."""
    if not ray.is_initialized():
        raise RuntimeNotRunningError("Ray is not initialized in this process: call dspex.init() first")
    queue = named_actor(DEAD_LETTERS)
    if queue is None:
        raise RuntimeNotRunningError(
            f"no {DEAD_LETTERS!r} actor on this cluster: the dspex runtime is not running; "
            "call dspex.init() first"
        )
    return queue


def dead_letters(limit: int | None = 100) -> list[DeadLetter]:
    """The newest ``limit`` dead letters of the cluster (all if None), oldest first:
    inputs that failed every retry, with the error and the number of attempts."""
    return list(ray.get(dead_letter_queue().list.remote(limit), timeout=CALL_TIMEOUT))


def dead_letter_count() -> int:
    return int(ray.get(dead_letter_queue().count.remote(), timeout=CALL_TIMEOUT))


async def record_dead_letter(entry: DeadLetter) -> bool:
    """Put ``entry`` in the cluster's queue; False (and a warning) if it could not be stored.

    Never raises: a caller records a dead letter while it is already reporting
    a failure, and that failure must reach its own caller unchanged.
    """
    try:
        queue = dead_letter_queue()
        await queue.put.remote(entry)
        return True
    except (RuntimeNotRunningError, RayActorError, RayTaskError) as exc:
        logger.warning("dspex: dead letter from %s not recorded: %s", entry.source, exc)
        return False



# --- status --------------------------------------------------------------------------


def collect_status(recent: int = 5, timeout: float = 10.0) -> dict[str, Any]:
    """The tree, the provider pools and the dead letters, as plain JSON-ready data
    (see ``dspex.runtime.status``). Raises ``RuntimeNotRunningError`` when there is
    no live root on the cluster this process is connected to."""
    # The dashboard reads the same actors through the same functions.
    from dspex.runtime.status_rows import dead_letter_row, provider_pools, tree_node
    from dspex.runtime.supervision.tree import render_tree

    tree = _root_tree(timeout)
    count, letters = _dead_letter_summary(recent, timeout)
    return {
        "address": ray.get_runtime_context().gcs_address,
        "namespace": NAMESPACE,
        "tree": tree_node(tree),
        "tree_text": render_tree(tree),
        "pools": provider_pools(timeout),
        "dead_letters": {
            "count": count,
            "recent": [dead_letter_row(entry) for entry in reversed(letters)],  # newest first
        },
    }


def _root_tree(timeout: float) -> Any:
    root = find_root()
    if root is None:
        raise RuntimeNotRunningError(
            f"Ray is up but no dspex runtime runs on it (no {ROOT_SUPERVISOR!r} actor in "
            f"namespace {NAMESPACE!r}); start it with dspex.init(address=...) from a driver"
        )
    try:
        return ray.get(root.tree.remote(), timeout=timeout)
    except RayActorError as exc:
        raise RuntimeNotRunningError(
            f"the dspex root supervisor is dead ({type(exc).__name__}); the next dspex.init() "
            "on this cluster starts a new tree"
        ) from exc


def _dead_letter_summary(recent: int, timeout: float) -> tuple[int, list[DeadLetter]]:
    queue = named_actor(DEAD_LETTERS)
    if queue is None:  # restarting: the tree shows it
        return 0, []
    count_ref, list_ref = queue.count.remote(), queue.list.remote(recent)
    return int(ray.get(count_ref, timeout=timeout)), list(ray.get(list_ref, timeout=timeout))


__all__ = [
    "CHILDREN",
    "DEAD_LETTERS",
    "OPTIMIZERS",
    "PROVIDERS",
    "SERVICES",
    "collect_status",
    "dead_letter_count",
    "dead_letter_queue",
    "dead_letters",
    "ensure_root",
    "find_root",
    "named_actor",
    "record_dead_letter",
    "root_children",
    "start_root",
    "stop_root",
]
