"""Every read the dashboard makes from the live dspex runtime, in this one module.

Runs, trials and usage come from the run store (see store_view.py); what only
the running system knows comes from here: provider pools, the supervision
tree, dead letters and the event log. Each read is a small function that
returns plain JSON-ready data and tolerates the part it reads not being there
(not built yet, runtime not connected, actor gone): the page then says so
instead of failing. Everything here blocks, so the server calls `collect` on a
worker thread.

What this module expects from the runtime (named actors in the ``dspex``
namespace (`dspex.runtime.names`), found the way any driver attached to the
cluster would; the pools, tree and dead letters are shaped by
`dspex.runtime.status_rows`, which ``dspex status`` uses too):

* ``dspex.events``: the `EventLog` (dspex.runtime.supervision.events); its ``head()``
  and ``since(cursor, limit)`` -> ``(events, next_cursor)``. The first read
  starts `EVENT_BACKLOG` events before the head, so a fresh page has history.
* ``dspex.root``: the root `Supervisor` (or ``dspex.runtime.current().root``);
  its ``tree()`` returns a `TreeNode` with restart counts.
* ``dspex.dead_letters``: a `DeadLetterQueue` actor; its ``list(limit)``
  returns `DeadLetter` entries.
* ``dspex.pool.*``: the provider pools; each answers ``stats()``.

An actor that does not exist reads as empty (no events, no tree), not as an
error. Records may be objects or dicts, with a few alternative field names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspex.runtime.names import DEAD_LETTERS, EVENT_LOG_NAME, NAMESPACE, ROOT_SUPERVISOR
from dspex.runtime.status_rows import (
    MAX_TEXT,
    as_int,
    as_number,
    dead_letter_row,
    field_of,
    pool_row,
    provider_pools,
    short_text,
    tree_node,
)

log = logging.getLogger("dspex.dashboard")

MAX_DEAD_LETTERS = 100
EVENT_BACKLOG = 200  # events a newly opened dashboard shows from before it started
EVENTS_PER_READ = 2000
DEAD_LETTERS_NAME = DEAD_LETTERS  # the name tests and older code know

NOT_CONNECTED = (
    "runtime not connected: start the dashboard with --address (e.g. `dspex dashboard --address auto`) "
    "to see provider pools, the supervision tree and dead letters"
)


@dataclass
class RuntimeView:
    """One reading of the live runtime."""

    connected: bool = False
    address: str | None = None
    message: str = NOT_CONNECTED
    pools: list[dict[str, Any]] = field(default_factory=list)
    tree: dict[str, Any] | None = None
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # only those new since the last read
    errors: dict[str, str] = field(default_factory=dict)  # section -> why it could not be read


class RuntimeSources:
    """Reads the runtime. ``address`` None: only a runtime this process already runs is shown."""

    def __init__(self, address: str | None = None, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self._cursor: int | None = None
        self._connect_error: str | None = None

    def connect(self) -> None:
        """Attach to the cluster at ``address`` (blocking; errors are shown on the page)."""
        if self.address is None:
            return
        try:
            import ray

            if not ray.is_initialized():
                # A plain attach: the dashboard only reads, so it must not start the
                # root supervisor or pools on a cluster that has none (dspex.init would).
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False)
        except Exception as exc:
            self._connect_error = f"could not connect to {self.address}: {type(exc).__name__}: {exc}"
            log.warning("dspex dashboard: %s", self._connect_error)

    def collect(self) -> RuntimeView:
        """Everything the runtime can tell right now (blocking)."""
        if not runtime_connected():
            return RuntimeView(address=self.address, message=self._connect_error or NOT_CONNECTED)
        view = RuntimeView(connected=True, address=self.address, message="connected")
        view.pools = _guarded(view, "pools", lambda: provider_pools(self.timeout), [])
        view.tree = _guarded(view, "tree", lambda: supervision_tree(self.timeout), None)
        view.dead_letters = _guarded(view, "dead_letters", lambda: dead_letters(self.timeout), [])
        view.events = _guarded(view, "events", self._new_events, [])
        return view

    def _new_events(self) -> list[dict[str, Any]]:
        events, self._cursor = events_since(self._cursor, self.timeout)
        return events


# --- connection --------------------------------------------------------------------


def runtime_connected() -> bool:
    """Whether this process can see a dspex runtime: dspex.init ran here, or Ray is attached."""
    from dspex import runtime

    if runtime.active():
        return True
    ray = _loaded_ray()
    return ray is not None and ray.is_initialized()


def _loaded_ray() -> Any:
    # Only a Ray this process already imported: importing it costs seconds.
    import sys

    return sys.modules.get("ray")


# --- provider pools ---------------------------------------------------------------


# --- supervision tree ---------------------------------------------------------------


def supervision_tree(timeout: float) -> dict[str, Any] | None:
    """The supervision tree as nested ``{name, kind, strategy, status, restarts, children}`` nodes."""
    root = _root_supervisor()
    return None if root is None else tree_node(call(root, "tree", timeout=timeout))


def _root_supervisor() -> Any:
    from dspex import runtime

    current = runtime.current()
    if current is not None and current.root is not None:
        return current.root
    return named_actor(ROOT_SUPERVISOR)


# --- dead letters -----------------------------------------------------------------


def dead_letters(timeout: float) -> list[dict[str, Any]]:
    """Inputs that failed every retry, newest first."""
    queue = named_actor(DEAD_LETTERS_NAME)
    if queue is None:
        return []
    entries = list(call(queue, "list", MAX_DEAD_LETTERS, timeout=timeout) or [])
    rows = [dead_letter_row(entry) for entry in entries]
    rows.sort(key=lambda row: row["time"] or 0.0, reverse=True)
    return rows[:MAX_DEAD_LETTERS]


# --- events ---------------------------------------------------------------------


def events_since(cursor: int | None, timeout: float) -> tuple[list[dict[str, Any]], int | None]:
    """The events logged after ``cursor`` (None: recent history), and the cursor to ask with next."""
    event_log = named_actor(EVENT_LOG_NAME)
    if event_log is None:
        return [], cursor
    if cursor is None:
        cursor = max(0, as_int(call(event_log, "head", timeout=timeout)) - EVENT_BACKLOG)
    events, next_cursor = call(event_log, "since", cursor, EVENTS_PER_READ, timeout=timeout)
    return [event_row(event) for event in events], next_cursor


def event_row(event: Any) -> dict[str, Any]:
    data = field_of(event, "data", default=None) or {}
    if not isinstance(data, dict):
        data = {"value": data}
    return {
        "kind": str(field_of(event, "kind", default="?")),
        "source": short_text(field_of(event, "source", default="")),
        "time": as_number(field_of(event, "time", default=None)) or time.time(),
        "data": {str(k): _plain(v) for k, v in data.items()},
    }


# --- calling into the runtime ---------------------------------------------------------


def named_actor(name: str) -> Any:
    """The handle of the actor registered as ``name`` in the dspex namespace, or None."""
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # Ray's way of saying there is no such actor
        return None


def call(target: Any, method: str, *args: Any, timeout: float) -> Any:
    """``target.method(*args)`` whether target is a Ray actor handle or a plain object."""
    bound = getattr(target, method)
    remote = getattr(bound, "remote", None)
    if remote is not None:
        import ray

        return ray.get(remote(*args), timeout=timeout)
    value = bound(*args)
    # Runtime classes have async methods even used in-process; this runs on a worker thread.
    if asyncio.iscoroutine(value):
        return asyncio.run(asyncio.wait_for(value, timeout))
    return value


def _guarded(view: RuntimeView, section: str, read: Callable[[], Any], default: Any) -> Any:
    try:
        return read()
    except Exception as exc:  # one unreadable section must not blank the others
        log.debug("dspex dashboard: reading %s failed", section, exc_info=True)
        view.errors[section] = short_text(exc)
        return default


# --- shaping values -------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return short_text(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return as_number(value)
    return short_text(value)


__all__ = [
    "DEAD_LETTERS_NAME",
    "EVENT_BACKLOG",
    "MAX_TEXT",
    "RuntimeSources",
    "RuntimeView",
    "call",
    "dead_letters",
    "event_row",
    "events_since",
    "named_actor",
    "pool_row",
    "provider_pools",
    "runtime_connected",
    "supervision_tree",
    "tree_node",
]
