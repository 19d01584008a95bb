"""Errors raised by the supervision layer.

Every error keeps its facts as constructor arguments (so it pickles across Ray
processes unchanged) and formats its message in ``__str__``.
"""

from __future__ import annotations

from dspex.errors import DspexError


class SupervisorError(DspexError):
    """Base class of the supervision layer's errors."""


class InvalidChildSpecError(SupervisorError, ValueError):
    """A child spec or supervisor setting is invalid."""


class ChildStartError(SupervisorError):
    """A child failed to start (OTP's ``failed_to_start_child``).

    ``child`` names the child, ``reason`` says why (the exception raised by its
    ``__init__``, a start timeout, a name already taken, ...).
    """

    def __init__(self, child: str, reason: str) -> None:
        super().__init__(child, reason)
        self.child = child
        self.reason = reason

    def __str__(self) -> str:
        return f"failed to start child {self.child!r}: {self.reason}"


class ChildNotFoundError(SupervisorError):
    """No child of that name is known to the supervisor."""

    def __init__(self, child: str) -> None:
        super().__init__(child)
        self.child = child

    def __str__(self) -> str:
        return f"no child named {self.child!r}; see which_children() for the names"


class ChildAlreadyExistsError(SupervisorError):
    """A child of that name is already in the supervisor's child list."""

    def __init__(self, child: str, running: bool) -> None:
        super().__init__(child, running)
        self.child = child
        self.running = running

    def __str__(self) -> str:
        state = "already started" if self.running else "already present (terminated)"
        return f"child {self.child!r} is {state}; delete_child() it first or pick another name"


class ChildRunningError(SupervisorError):
    """The operation needs a terminated child but this one is running or restarting."""

    def __init__(self, child: str, state: str) -> None:
        super().__init__(child, state)
        self.child = child
        self.state = state

    def __str__(self) -> str:
        return f"child {self.child!r} is {self.state}; terminate_child() it first"


class SupervisorStoppedError(SupervisorError):
    """The supervisor has shut down and accepts no more requests."""

    def __init__(self, supervisor: str, reason: str) -> None:
        super().__init__(supervisor, reason)
        self.supervisor = supervisor
        self.reason = reason

    def __str__(self) -> str:
        return f"supervisor {self.supervisor!r} has stopped ({self.reason})"


class ServiceRestartedError(SupervisorError):
    """A non-idempotent call reached a service whose actor died.

    The call may or may not have run before the actor died (Ray cannot tell),
    so it is not retried. The next call resolves the restarted actor.
    """

    def __init__(self, name: str, method: str, cause: str) -> None:
        super().__init__(name, method, cause)
        self.name = name
        self.method = method
        self.cause = cause

    def __str__(self) -> str:
        return (
            f"service {self.name!r} died during {self.method}() ({self.cause}); the call "
            "may or may not have run. Retry it if that is safe, or mark it idempotent"
        )


class ServiceUnavailableError(SupervisorError):
    """No live actor answered to the service's name within the timeout."""

    def __init__(self, name: str, namespace: str, waited: float) -> None:
        super().__init__(name, namespace, waited)
        self.name = name
        self.namespace = namespace
        self.waited = waited

    def __str__(self) -> str:
        return (
            f"no live actor named {self.name!r} in namespace {self.namespace!r} after "
            f"{self.waited:.1f}s; is its supervisor running?"
        )
