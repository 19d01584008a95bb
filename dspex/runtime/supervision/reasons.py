"""Why a child stopped: OTP exit reasons as plain data.

``normal`` and ``shutdown`` are clean exits (a transient child is not
restarted after them). Every other kind is a crash:

- ``killed``: someone called ``ray.kill`` on the actor;
- ``crashed``: the worker process died (``os._exit``, a fatal signal, OOM);
- ``node_lost``: the node the actor ran on died;
- ``noconnection``: Ray reports the actor unreachable (OTP's ``noconnection``);
- ``hung``: the actor stopped answering pings; the supervisor killed it;
- ``error``: the child called ``exit(reason)`` with any other reason.
"""

from __future__ import annotations

from dataclasses import dataclass

CLEAN_KINDS = frozenset({"normal", "shutdown"})


@dataclass(frozen=True)
class ExitReason:
    kind: str
    detail: str = ""

    @property
    def clean(self) -> bool:
        """Whether a transient child counts this as a clean exit."""
        return self.kind in CLEAN_KINDS

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind

    @classmethod
    def parse(cls, reason: str | ExitReason) -> ExitReason:
        """Read a reason given to ``exit()``: ``"normal"``, ``"shutdown"``,
        ``"shutdown:<detail>"`` (OTP's ``{shutdown, Term}``) or anything else (a crash)."""
        if isinstance(reason, ExitReason):
            return reason
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"an exit reason is a non-empty str or ExitReason, got {reason!r}")
        kind, _, detail = reason.partition(":")
        if kind in CLEAN_KINDS:
            return cls(kind, detail.strip())
        return cls("error", reason)


NORMAL = ExitReason("normal")
SHUTDOWN = ExitReason("shutdown")


def reason_from_actor_error(exc: BaseException) -> ExitReason:
    """Classify the error Ray raised on a call to a dead actor.

    Ray keeps the cause only in the message text, so this reads the message.
    """
    message = str(exc)
    if getattr(exc, "actor_init_failed", False):
        return ExitReason("crashed", "__init__ raised: " + last_line(message))
    if type(exc).__name__ == "ActorUnavailableError":
        return ExitReason("noconnection", first_line(message))
    if "ray.kill" in message:
        return ExitReason("killed", "ray.kill")
    if "node has died" in message or "node was terminated" in message:
        return ExitReason("node_lost", _line_with(message, "node"))
    return ExitReason("crashed", _line_with(message, "dead because") or first_line(message))


def describe_error(exc: BaseException) -> str:
    """A one-line summary of an exception, for start failures and events."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return describe_error(cause)
    if getattr(exc, "actor_init_failed", False):
        return "__init__ raised " + last_line(str(exc))
    text = first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def first_line(text: str, limit: int = 300) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def last_line(text: str, limit: int = 300) -> str:
    # A traceback's last line names the exception: "RuntimeError: boom".
    for line in reversed(text.splitlines()):
        if line.strip() and not set(line.strip()) <= {"^", "~", " "}:
            return line.strip()[:limit]
    return ""


def _line_with(text: str, needle: str, limit: int = 300) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()[:limit]
    return ""
