"""Supervision trees, the event bus and dead letters: OTP's ideas on Ray.

Pure pieces (specs, decisions, events, rendering) load without Ray. The
Ray-backed ``Supervisor`` and its helpers load on first use, so
``import dspex`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.supervisors.child import Supervised, supervised_class
from dspex.supervisors.child_spec import ChildSpec
from dspex.supervisors.dead_letters import DeadLetter, DeadLetterQueue
from dspex.supervisors.errors import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
    ChildStartError,
    InvalidChildSpecError,
    ServiceRestartedError,
    ServiceUnavailableError,
    SupervisorError,
    SupervisorStoppedError,
)
from dspex.supervisors.events import Event, EventBus, EventLog, emit, subscribe
from dspex.supervisors.intensity import RestartIntensity
from dspex.supervisors.names import NAMESPACE, ServiceRef
from dspex.supervisors.reasons import ExitReason
from dspex.supervisors.state import (
    ChildCounts,
    ChildInfo,
    Plan,
    SupervisorConfig,
    SupervisorState,
)
from dspex.supervisors.tree import TreeNode, render_tree

if TYPE_CHECKING:
    from dspex.supervisors.supervisor import (
        Supervisor,
        get_supervisor,
        start_supervisor,
        start_supervisor_async,
        stop_supervisor,
        supervisor_spec,
    )

_RAY_BACKED = {
    "Supervisor",
    "get_supervisor",
    "start_supervisor",
    "start_supervisor_async",
    "stop_supervisor",
    "supervisor_spec",
}


def __getattr__(name: str) -> Any:
    if name in _RAY_BACKED:
        from dspex.supervisors import supervisor

        return getattr(supervisor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NAMESPACE",
    "ChildAlreadyExistsError",
    "ChildCounts",
    "ChildInfo",
    "ChildNotFoundError",
    "ChildRunningError",
    "ChildSpec",
    "ChildStartError",
    "DeadLetter",
    "DeadLetterQueue",
    "Event",
    "EventBus",
    "EventLog",
    "ExitReason",
    "InvalidChildSpecError",
    "Plan",
    "RestartIntensity",
    "ServiceRef",
    "ServiceRestartedError",
    "ServiceUnavailableError",
    "Supervised",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorState",
    "SupervisorStoppedError",
    "TreeNode",
    "emit",
    "get_supervisor",
    "render_tree",
    "start_supervisor",
    "start_supervisor_async",
    "stop_supervisor",
    "subscribe",
    "supervised_class",
    "supervisor_spec",
]
