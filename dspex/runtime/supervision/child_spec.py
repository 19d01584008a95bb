"""ChildSpec: how a supervisor starts, restarts and stops one child.

Pure data: no Ray here. ``cls`` is a plain Python class; the supervisor starts
it as a Ray named actor in the ``dspex`` namespace with Ray's own restarts off,
so OTP semantics are the only restart mechanism.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Union

from dspex.errors import InvalidChildSpecError

Restart = Literal["permanent", "transient", "temporary"]
Shutdown = Union[float, Literal["brutal_kill", "infinity"]]

RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")
WORKER_SHUTDOWN = 5.0  # OTP's default for workers: 5000 ms

# Options the supervisor owns: a spec cannot override them.
RESERVED_ACTOR_OPTIONS = frozenset(
    {"name", "namespace", "lifetime", "max_restarts", "max_task_retries", "get_if_exists"}
)


@dataclass(frozen=True)
class ChildSpec:
    """One child of a supervisor.

    - ``name``: the child's id in the supervisor and its Ray actor name.
    - ``cls``, ``args``, ``kwargs``: the actor is ``cls(*args, **kwargs)``.
    - ``restart``: ``permanent`` (always restarted), ``transient`` (restarted
      unless it exits ``normal``/``shutdown``), ``temporary`` (never restarted,
      removed from the child list when it exits).
    - ``shutdown``: seconds to wait for the child's ``terminate(reason)`` before
      killing it, ``"brutal_kill"`` (kill at once) or ``"infinity"``. Defaults to
      5 s for workers and ``"infinity"`` for supervisors, as in OTP.
    - ``actor_options``: passed to Ray's ``.options()`` (``num_cpus``,
      ``resources``, ``scheduling_strategy``, ...). A soft
      ``NodeAffinitySchedulingStrategy`` lets a restart land on another node
      when the preferred one is gone.
    - ``significant``: the child's exit may shut the supervisor down
      (``auto_shutdown``); a significant child cannot be permanent.
    - ``start_timeout``: seconds to wait for the child to be ready; ``None``
      waits forever (the default for supervisors, which start their own children).
    - ``labels``: short strings shown with the child in the supervision tree
      (a served replica's ``version``); the supervisor does not read them.
    """

    name: str
    cls: type
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    actor_options: Mapping[str, Any] = field(default_factory=dict)
    significant: bool = False
    start_timeout: float | None = 30.0
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not inspect.isclass(self.cls):
            raise InvalidChildSpecError(f"child {self.name!r}: cls must be a class, got {self.cls!r}")
        if self.restart not in RESTART_TYPES:
            raise InvalidChildSpecError(
                f"child {self.name!r}: restart must be one of {RESTART_TYPES}, got {self.restart!r}"
            )
        if self.significant and self.restart == "permanent":
            raise InvalidChildSpecError(
                f"child {self.name!r}: a significant child cannot be permanent (OTP rule); "
                "make it transient or temporary"
            )
        reserved = RESERVED_ACTOR_OPTIONS.intersection(self.actor_options)
        if reserved:
            raise InvalidChildSpecError(
                f"child {self.name!r}: actor_options {sorted(reserved)} are set by the supervisor"
            )
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "actor_options", MappingProxyType(dict(self.actor_options)))
        object.__setattr__(
            self, "labels", MappingProxyType({str(k): str(v) for k, v in self.labels.items()})
        )
        object.__setattr__(self, "shutdown", self._resolve_shutdown())
        if self.start_timeout is not None and not _positive(self.start_timeout):
            raise InvalidChildSpecError(
                f"child {self.name!r}: start_timeout must be a positive number or None"
            )

    @property
    def is_supervisor(self) -> bool:
        return bool(getattr(self.cls, "is_supervisor", False))

    def _resolve_shutdown(self) -> Shutdown:
        value = self.shutdown
        if value is None:
            return "infinity" if self.is_supervisor else WORKER_SHUTDOWN
        if value in ("brutal_kill", "infinity"):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InvalidChildSpecError(
                f"child {self.name!r}: shutdown must be seconds >= 0, 'brutal_kill' or "
                f"'infinity', got {value!r}"
            )
        return float(value)

    # MappingProxyType does not pickle; send plain dicts across processes.
    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                self.name,
                self.cls,
                self.args,
                dict(self.kwargs),
                self.restart,
                self.shutdown,
                dict(self.actor_options),
                self.significant,
                self.start_timeout,
                dict(self.labels),
            ),
        )


def _rebuild(*fields: Any) -> ChildSpec:
    return ChildSpec(*fields)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidChildSpecError(f"a child's name must be a non-empty string, got {name!r}")


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )
