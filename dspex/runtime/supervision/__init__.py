"""Supervision trees, the event bus and dead letters: OTP's ideas on Ray.

Pure pieces (specs, decisions, events, rendering) load without Ray. The
Ray-backed ``Supervisor`` and its helpers load on first use, so
``import dspex`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.observability.events import Event, EventBus, emit, subscribe
from dspex.runtime.names import NAMESPACE
from dspex.runtime.supervision.child import Supervised, supervised_class
from dspex.runtime.supervision.child_spec import ChildSpec
from dspex.runtime.supervision.dead_letters import DeadLetter, DeadLetterQueue
from dspex.runtime.supervision.errors import (
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
from dspex.runtime.supervision.events import EventLog
from dspex.runtime.supervision.intensity import RestartIntensity
from dspex.runtime.supervision.reasons import ExitReason
from dspex.runtime.supervision.service_ref import ServiceRef
from dspex.runtime.supervision.state import (
    ChildCounts,
    ChildInfo,
    Plan,
    SupervisorConfig,
    SupervisorState,
)
from dspex.runtime.supervision.tree import TreeNode, render_tree

if TYPE_CHECKING:
    from dspex.runtime.supervision.supervisor import (
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
        from dspex.runtime.supervision import supervisor

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
