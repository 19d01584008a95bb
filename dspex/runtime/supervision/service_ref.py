"""Finding services by name: OTP's registry / ``via_tuple`` on Ray named actors.

Every supervised child is a Ray named actor in the ``dspex`` namespace. A
``ServiceRef`` holds a name, not an actor: after the actor is restarted it
resolves the name again. Calls marked idempotent are retried on the new actor;
any other call that hits a dead actor raises ``ServiceRestartedError``, since
Ray cannot say whether it ran.

Ray is imported lazily: this module loads without it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dspex.runtime.names import NAMESPACE
from dspex.runtime.supervision.errors import ServiceRestartedError, ServiceUnavailableError
from dspex.runtime.supervision.reasons import first_line

POLL_INTERVAL = 0.05  # seconds between look-ups while a restarted actor registers


class ServiceRef:
    """A client for the actor registered as ``name`` in ``namespace``.

    ``await ref.call("method", *args, idempotent=False, **kwargs)`` (async) or
    ``ref.call_sync(...)``. ``resolve_timeout`` bounds how long a call waits for
    the name to be registered by a live actor; ``retries`` bounds how many times
    an idempotent call is re-sent after the actor died.
    """

    def __init__(
        self,
        name: str,
        *,
        namespace: str = NAMESPACE,
        resolve_timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a service name must be a non-empty string, got {name!r}")
        self.name = name
        self.namespace = namespace
        self.resolve_timeout = resolve_timeout
        self.retries = retries
        self._handle: Any | None = None
        self._dead: set[str] = set()  # actor ids known dead: never resolve to them again

    def __repr__(self) -> str:
        return f"ServiceRef({self.name!r}, namespace={self.namespace!r})"

    @property
    def actor_id(self) -> str | None:
        return None if self._handle is None else self._handle._actor_id.hex()

    # --- resolving -------------------------------------------------------

    def resolve(self) -> Any:
        """The live actor's handle, looking the name up if needed (blocking poll)."""
        deadline = time.monotonic() + self.resolve_timeout
        while True:
            handle = self._lookup()
            if handle is not None:
                return handle
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(self.name, self.namespace, self.resolve_timeout)
            time.sleep(POLL_INTERVAL)

    async def aresolve(self) -> Any:
        deadline = time.monotonic() + self.resolve_timeout
        while True:
            handle = self._lookup()
            if handle is not None:
                return handle
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(self.name, self.namespace, self.resolve_timeout)
            await asyncio.sleep(POLL_INTERVAL)

    def _lookup(self) -> Any | None:
        if self._handle is not None:
            return self._handle
        import ray

        try:
            handle = ray.get_actor(self.name, namespace=self.namespace)
        except ValueError:
            return None
        if handle._actor_id.hex() in self._dead:
            return None  # the name still points at the dead actor; wait for the new one
        self._handle = handle
        return handle

    def _forget(self, handle: Any) -> None:
        self._dead.add(handle._actor_id.hex())
        if self._handle is handle:
            self._handle = None

    # --- calling ---------------------------------------------------------

    async def call(self, method: str, *args: Any, idempotent: bool = False, **kwargs: Any) -> Any:
        from ray.exceptions import RayActorError

        attempt = 0
        while True:
            handle = await self.aresolve()
            try:
                return await getattr(handle, method).remote(*args, **kwargs)
            except RayActorError as exc:
                self._on_dead(handle, method, exc, idempotent, attempt)
            attempt += 1

    def call_sync(
        self,
        method: str,
        *args: Any,
        idempotent: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        import ray
        from ray.exceptions import RayActorError

        attempt = 0
        while True:
            handle = self.resolve()
            try:
                return ray.get(getattr(handle, method).remote(*args, **kwargs), timeout=timeout)
            except RayActorError as exc:
                self._on_dead(handle, method, exc, idempotent, attempt)
            attempt += 1

    def _on_dead(
        self, handle: Any, method: str, exc: BaseException, idempotent: bool, attempt: int
    ) -> None:
        # Raises unless the call may be sent again.
        self._forget(handle)
        if not idempotent or attempt >= self.retries:
            raise ServiceRestartedError(self.name, method, first_line(str(exc))) from exc
