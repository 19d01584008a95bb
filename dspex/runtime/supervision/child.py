"""The supervision protocol every child speaks.

Ray has no links or monitors. A supervisor learns that a child is gone by
keeping one call open on it, ``watch()``, which returns only when the child
exits cleanly (with its reason) and raises ``RayActorError`` when the actor
dies. ``ping()`` answers only if the child's event loop is free, which catches
a hung child. ``ready()`` is called once after creation.

``Supervised`` adds these methods. The supervisor wraps any plain class in a
generated subclass ``(Supervised, cls)``, so user classes need not inherit it;
inheriting it gives the class ``self.exit(reason)`` in unit tests too.

A child ends itself with ``self.exit("normal")`` (or ``"shutdown"``, or any
other reason, which counts as a crash). It must not call
``ray.actor.exit_actor()``: Ray waits for running calls before such an exit,
and ``watch()`` never finishes, so the actor would never exit.

No Ray import at module load: the class must be usable without Ray.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from dspex.runtime.supervision.reasons import ExitReason

_cache: dict[type, type] = {}


class Supervised:
    """Mixin giving a class the supervision protocol (no ``__init__`` of its own)."""

    _dspex_exit_reason: ExitReason | None = None
    _dspex_exit_future: asyncio.Future[ExitReason] | None = None
    #: seconds an exited actor waits for its supervisor to collect the reason
    #: (the supervisor kills it at once) before it kills itself
    exit_grace: float = 5.0

    async def watch(self) -> ExitReason:
        """Return the exit reason once the child calls ``exit()``; never otherwise."""
        if self._dspex_exit_reason is not None:
            return self._dspex_exit_reason
        if self._dspex_exit_future is None:
            self._dspex_exit_future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._dspex_exit_future)

    async def ping(self) -> bool:
        """Answer at once: a reply proves the event loop is not stuck."""
        return True

    async def ready(self) -> dict[str, Any]:
        """Called by the supervisor once the actor exists; says where it runs."""
        return {"pid": os.getpid(), "node_id": _node_id(), "actor_id": _actor_id()}

    def exit(self, reason: str | ExitReason = "normal") -> None:
        """End this child with ``reason``: ``"normal"``, ``"shutdown"``,
        ``"shutdown:<detail>"`` (clean), anything else is a crash.

        Pending ``watch()`` calls return the reason; the supervisor then kills
        the actor. Unsupervised, the actor kills itself after ``exit_grace``.
        """
        if self._dspex_exit_reason is not None:
            return
        parsed = ExitReason.parse(reason)
        self._dspex_exit_reason = parsed
        future = self._dspex_exit_future
        if future is not None and not future.done():
            future.get_loop().call_soon_threadsafe(_resolve, future, parsed)
        _schedule_self_kill(self.exit_grace)

    @property
    def exit_reason(self) -> ExitReason | None:
        return self._dspex_exit_reason


def supervised_class(cls: type) -> type:
    """``cls`` if it already speaks the protocol, else a subclass ``(Supervised, cls)``."""
    if issubclass(cls, Supervised):
        return cls
    wrapped = _cache.get(cls)
    if wrapped is None:
        wrapped = type(
            cls.__name__,
            (Supervised, cls),
            {"__qualname__": f"supervised({cls.__qualname__})", "__module__": cls.__module__},
        )
        _cache[cls] = wrapped
    return wrapped


def _resolve(future: asyncio.Future[ExitReason], reason: ExitReason) -> None:
    if not future.done():
        future.set_result(reason)


def _ray() -> Any:
    # Only inside a Ray process does Ray matter; never import it here.
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def _node_id() -> str | None:
    ray = _ray()
    return ray.get_runtime_context().get_node_id() if ray else None


def _actor_id() -> str | None:
    ray = _ray()
    return ray.get_runtime_context().get_actor_id() if ray else None


def _schedule_self_kill(grace: float) -> None:
    ray = _ray()
    if ray is None or ray.get_runtime_context().get_actor_id() is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # a threaded call: the supervisor still kills the actor
    handle = ray.get_runtime_context().current_actor
    loop.call_later(grace, ray.kill, handle)
