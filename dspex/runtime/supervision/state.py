"""A supervisor's bookkeeping and decisions, as pure logic (no Ray, no sleeping).

``SupervisorState`` holds the child list in start order and answers one
question each time something happens: *what must be stopped, in which order,
what must be started, in which order, and must the supervisor itself exit?*
The answer is a ``Plan``; the Ray actor in ``supervisor.py`` carries it out and
reports back (``mark_running``, ``mark_stopped``, ``start_failed``).

OTP semantics reproduced here (``supervisor.erl``):

- strategies ``one_for_one``, ``one_for_all`` (stop the others in reverse
  order, restart all in start order) and ``rest_for_one`` (stop the children
  started after the failed one, restart it and them);
- restart types: permanent always, transient unless the exit was clean,
  temporary never (and removed from the list when it exits, even when stopped
  as a sibling);
- intensity: one restart event counts once, whatever the strategy; a failed
  restart leaves the child ``restarting`` and its retry counts again; manual
  ``restart_child`` does not count;
- ``auto_shutdown`` on significant children.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dspex.errors import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
    InvalidChildSpecError,
)
from dspex.runtime.supervision.child_spec import ChildSpec
from dspex.runtime.supervision.intensity import Clock, RestartIntensity
from dspex.runtime.supervision.reasons import ExitReason

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]
ChildState = Literal["running", "restarting", "terminated"]

STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")
AUTO_SHUTDOWNS: tuple[str, ...] = ("never", "any_significant", "all_significant")

# Why a supervisor exits (the detail of its ``shutdown`` exit reason).
REACHED_MAX_RESTART_INTENSITY = "reached_max_restart_intensity"
AUTO_SHUTDOWN = "auto_shutdown"


@dataclass(frozen=True)
class SupervisorConfig:
    """A supervisor's settings.

    ``ping_interval``/``ping_timeout``: every ``ping_interval`` seconds each
    child is pinged; no answer within ``ping_timeout`` means its event loop is
    stuck, and the child is killed (exit reason ``hung``). ``None`` turns pings
    off. ``exit_grace``: after giving up, how long the supervisor waits for its
    parent to collect its exit reason before it exits by itself.
    """

    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    auto_shutdown: AutoShutdown = "never"
    ping_interval: float | None = 5.0
    ping_timeout: float = 30.0
    exit_grace: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidChildSpecError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.auto_shutdown not in AUTO_SHUTDOWNS:
            raise InvalidChildSpecError(
                f"auto_shutdown must be one of {AUTO_SHUTDOWNS}, got {self.auto_shutdown!r}"
            )
        RestartIntensity(self.max_restarts, self.max_seconds)  # validates both
        for label, value in (("ping_timeout", self.ping_timeout), ("exit_grace", self.exit_grace)):
            _require_positive(label, value)
        if self.ping_interval is not None:
            _require_positive("ping_interval", self.ping_interval)


@dataclass
class ChildRecord:
    spec: ChildSpec
    state: ChildState = "terminated"
    starts: int = 0
    actor_id: str | None = None
    node_id: str | None = None

    @property
    def restarts(self) -> int:
        """How many times the child was started again after its first start."""
        return max(self.starts - 1, 0)


@dataclass(frozen=True)
class ChildInfo:
    """One row of ``which_children()``."""

    name: str
    state: ChildState
    restarts: int
    restart: str
    is_supervisor: bool
    actor_id: str | None
    node_id: str | None


@dataclass(frozen=True)
class ChildCounts:
    """``count_children()``: specs known, children running, supervisors, workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


@dataclass(frozen=True)
class Plan:
    """What to do: stop ``stop`` (in that order), then start ``start`` (in that
    order), or, when ``shutdown`` is set, stop ``stop`` and exit with reason
    ``shutdown`` (detail in ``shutdown``). ``origin`` is the child whose exit
    caused the plan: a failed start is retried as a restart of ``origin``."""

    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    shutdown: str | None = None
    origin: str | None = None


class SupervisorState:
    def __init__(
        self,
        specs: Iterable[ChildSpec] = (),
        config: SupervisorConfig | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config or SupervisorConfig()
        self.intensity = RestartIntensity(
            self.config.max_restarts, self.config.max_seconds, clock=clock
        )
        self._children: dict[str, ChildRecord] = {}
        for spec in specs:
            self.add(spec)

    # --- queries ---------------------------------------------------------

    def get(self, name: str) -> ChildRecord:
        try:
            return self._children[name]
        except KeyError:
            raise ChildNotFoundError(name) from None

    def names(self) -> list[str]:
        """Every child, in start order."""
        return list(self._children)

    def running(self) -> list[str]:
        return [name for name, rec in self._children.items() if rec.state == "running"]

    def info(self) -> list[ChildInfo]:
        return [
            ChildInfo(
                name=name,
                state=rec.state,
                restarts=rec.restarts,
                restart=rec.spec.restart,
                is_supervisor=rec.spec.is_supervisor,
                actor_id=rec.actor_id,
                node_id=rec.node_id,
            )
            for name, rec in self._children.items()
        ]

    def counts(self) -> ChildCounts:
        supervisors = sum(rec.spec.is_supervisor for rec in self._children.values())
        return ChildCounts(
            specs=len(self._children),
            active=len(self.running()),
            supervisors=supervisors,
            workers=len(self._children) - supervisors,
        )

    # --- changes reported by the executor --------------------------------

    def add(self, spec: ChildSpec) -> None:
        """Append a child to the start order (it is started last, stopped first)."""
        existing = self._children.get(spec.name)
        if existing is not None:
            raise ChildAlreadyExistsError(spec.name, running=existing.state != "terminated")
        self._children[spec.name] = ChildRecord(spec)

    def mark_running(self, name: str, actor_id: str | None, node_id: str | None) -> None:
        rec = self.get(name)
        rec.state, rec.actor_id, rec.node_id = "running", actor_id, node_id
        rec.starts += 1

    def mark_stopped(self, name: str) -> None:
        """The supervisor stopped this child. Temporary children leave the list;
        a child already marked for restart stays ``restarting``."""
        rec = self._children.get(name)
        if rec is None:
            return
        rec.actor_id = None
        if rec.spec.restart == "temporary":
            del self._children[name]
        elif rec.state == "running":
            rec.state = "terminated"

    def mark_failed(self, name: str) -> None:
        """A start that is not retried failed (initial start, start_child, restart_child)."""
        rec = self._children.get(name)
        if rec is not None:
            rec.state, rec.actor_id = "terminated", None

    def remove(self, name: str) -> None:
        self._children.pop(name, None)

    def replace_spec(self, spec: ChildSpec) -> ChildSpec:
        """Put ``spec`` in place of the child of the same name (its next start uses
        it; its place in the start order and its restart count stay); returns the old spec."""
        rec = self.get(spec.name)
        old, rec.spec = rec.spec, spec
        return old

    # --- decisions -------------------------------------------------------

    def child_exited(self, name: str, reason: ExitReason) -> Plan:
        """A running child exited on its own (crash, kill, clean exit)."""
        rec = self._children.get(name)
        if rec is None or rec.state != "running":
            return Plan()  # stale news about a child already stopped or removed
        rec.state, rec.actor_id = "terminated", None
        if _restarts(rec.spec, reason):
            return self._restart(name)
        if rec.spec.restart == "temporary":
            del self._children[name]
        return self._auto_shutdown(rec.spec)

    def start_failed(self, name: str, origin: str | None) -> Plan:
        """Starting ``name`` during a restart failed: show it ``restarting`` and
        retry the restart of ``origin``; the retry counts toward intensity."""
        rec = self._children.get(name)
        if rec is not None:
            rec.state, rec.actor_id = "restarting", None
        if origin is None or origin not in self._children:
            origin = name
        return self._restart(origin)

    def terminate(self, name: str) -> Plan:
        """Manual ``terminate_child``: stop it if running; keep the spec."""
        rec = self.get(name)
        if rec.state == "running":
            return Plan(stop=(name,))
        if rec.state == "restarting":
            rec.state = "terminated"  # cancels the pending retry
        if rec.spec.restart == "temporary":
            del self._children[name]
        return Plan()

    def manual_restart(self, name: str) -> Plan:
        """Manual ``restart_child``: only a terminated child; not counted."""
        rec = self.get(name)
        if rec.state != "terminated":
            raise ChildRunningError(name, rec.state)
        rec.state = "restarting"
        return Plan(start=(name,))

    def delete(self, name: str) -> None:
        """Manual ``delete_child``: only a terminated child."""
        rec = self.get(name)
        if rec.state != "terminated":
            raise ChildRunningError(name, rec.state)
        del self._children[name]

    def shutdown(self, detail: str) -> Plan:
        """Stop every running child in reverse start order, then exit."""
        return Plan(stop=tuple(reversed(self.running())), shutdown=detail)

    # --- internals -------------------------------------------------------

    def _restart(self, origin: str) -> Plan:
        if not self.intensity.add_restart():
            return Plan(
                stop=tuple(reversed(self.running())),
                shutdown=REACHED_MAX_RESTART_INTENSITY,
                origin=origin,
            )
        group = self._group(origin)
        # On a retry the origin may be running again (restarted before a sibling
        # failed): it is stopped with the rest.
        stop = tuple(n for n in reversed(group) if self._children[n].state == "running")
        start = tuple(n for n in group if self._children[n].spec.restart != "temporary")
        for name in start:
            self._children[name].state = "restarting"
        return Plan(stop=stop, start=start, origin=origin)

    def _group(self, origin: str) -> list[str]:
        """The children a restart of ``origin`` involves, in start order."""
        names = self.names()
        strategy = self.config.strategy
        if strategy == "one_for_all":
            return names
        if strategy == "rest_for_one":
            return names[names.index(origin) :]
        return [origin]

    def _auto_shutdown(self, spec: ChildSpec) -> Plan:
        mode = self.config.auto_shutdown
        if not spec.significant or mode == "never":
            return Plan()
        if mode == "all_significant" and any(
            rec.spec.significant and rec.state != "terminated" for rec in self._children.values()
        ):
            return Plan()
        return self.shutdown(AUTO_SHUTDOWN)


def _restarts(spec: ChildSpec, reason: ExitReason) -> bool:
    if spec.restart == "permanent":
        return True
    if spec.restart == "transient":
        return not reason.clean
    return False


def _require_positive(label: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise InvalidChildSpecError(f"{label} must be a finite number > 0, got {value!r}")
