"""The Supervisor actor: OTP supervision carried out on Ray.

``Supervisor`` is a plain class with async methods, run as a Ray actor. It
starts its children (Ray named actors in the ``dspex`` namespace, Ray's own
restarts off) in order, keeps one ``watch()`` call open on each to learn of
its death within milliseconds, pings each to catch a hung event loop, and
applies the decisions of ``SupervisorState`` (strategy, restart type,
intensity). A supervisor can be the child of another: when its restart
intensity is exceeded it stops its children and exits with reason
``shutdown``, and its parent treats that like any child's exit.

Children are owned by their supervisor, so when a supervisor's process dies
Ray kills its children too (OTP's links); the root is detached so it outlives
the driver that started it and a second driver can attach to it by name.

The driver-side helpers are ``start_supervisor``, ``stop_supervisor``,
``get_supervisor`` and ``supervisor_spec``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ray
from ray.exceptions import ActorAlreadyExistsError, GetTimeoutError, RayActorError, RayError

from dspex.runtime.names import NAMESPACE
from dspex.runtime.supervision import _event_remote, events
from dspex.runtime.supervision.child import Supervised, supervised_class
from dspex.runtime.supervision.child_spec import ChildSpec, Restart, Shutdown
from dspex.runtime.supervision.errors import ChildStartError, SupervisorStoppedError
from dspex.runtime.supervision.reasons import (
    SHUTDOWN,
    ExitReason,
    describe_error,
    reason_from_actor_error,
)
from dspex.runtime.supervision.state import (
    REACHED_MAX_RESTART_INTENSITY,
    ChildCounts,
    ChildInfo,
    Plan,
    SupervisorConfig,
    SupervisorState,
)
from dspex.runtime.supervision.tree import TreeNode

logger = logging.getLogger(__name__)

NAME_RELEASE_TIMEOUT = 5.0  # how long a restart waits for Ray to free a dead child's name
STOP_CONFIRM_TIMEOUT = 10.0  # how long a stop waits for Ray to confirm the death after kill
TREE_TIMEOUT = 5.0  # per child supervisor when collecting tree()
POLL_INTERVAL = 0.05
PLANNED_STOPS_KEPT = 1024


class _StartFailed(Exception):
    """A child's start attempt failed; ``reason`` says why.

    Private to this module, so it stays here rather than in `dspex.errors`: the
    supervisor raises and catches it between its own methods and turns it into a
    `ChildStartError` (or a restart decision) before anything leaves this module.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class _Running:
    """A started child: its handle and the tasks watching it."""

    handle: Any
    watch_ref: Any
    watcher: asyncio.Task[ExitReason] | None = None
    pinger: asyncio.Task[None] | None = None
    stopping: bool = False  # the supervisor is stopping it: its exit is not news
    forced: ExitReason | None = None  # why the supervisor killed it (hung)

    @property
    def actor_id(self) -> str:
        return self.handle._actor_id.hex()


class Supervisor(Supervised):
    """A supervisor of Ray actors. Start it with ``start_supervisor`` (root)
    or as a child through ``supervisor_spec``; settings are those of
    ``SupervisorConfig`` (``strategy``, ``max_restarts``, ``max_seconds``, ...)."""

    is_supervisor: ClassVar[bool] = True

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        config: SupervisorConfig | None = None,
        **settings: Any,
    ) -> None:
        config = config or SupervisorConfig()
        self._config = dataclasses.replace(config, **settings) if settings else config
        self._state = SupervisorState(children, self._config)
        self._runs: dict[str, _Running] = {}
        self._actor_classes: dict[type, Any] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopped: ExitReason | None = None
        self._name: str | None = None
        # Actors this supervisor stopped on purpose (updates, terminate_child, restarts of
        # siblings): a caller whose request met one of them knows the request met a
        # planned stop, not a crash it may have caused.
        self._planned_stops: collections.deque[str] = collections.deque(maxlen=PLANNED_STOPS_KEPT)
        self.exit_grace = self._config.exit_grace

    @property
    def name(self) -> str:
        if self._name is None:
            actor_name = ray.get_runtime_context().get_actor_name() if ray.is_initialized() else None
            self._name = actor_name or "supervisor"
        return self._name

    # --- the protocol with the parent --------------------------------------

    async def ready(self) -> dict[str, Any]:
        """Start every child in order (OTP's ``init``); raises ``ChildStartError``
        after stopping the children already started if one fails."""
        async with self._lock:
            self._check_open()
            if not self._started:
                events.connect_event_log()
                await self._start_initial()
                self._started = True
                await self._flush_events()  # start events are in the log once we are ready
        return await super().ready()

    async def terminate(self, reason: str = "shutdown") -> None:
        """Stop every child in reverse start order (called before the actor is killed)."""
        async with self._lock:
            if self._stopped is None:
                await self._stop_all(self._state.shutdown(reason).stop)
                self._stopped = ExitReason.parse(reason)
                self._emit("supervisor.stopped", reason=str(self._stopped))
                await self._flush_events()

    # --- the public API ----------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> ChildInfo:
        """Add ``spec`` at the end of the start order and start it."""
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child() takes a ChildSpec, got {type(spec).__name__}")
        async with self._lock:
            self._check_open()
            self._state.add(spec)
            try:
                await self._start(spec.name)
            except _StartFailed as failure:
                self._state.remove(spec.name)  # OTP keeps no spec for a failed start_child
                raise ChildStartError(spec.name, failure.reason) from None
            return self._info(spec.name)

    async def terminate_child(self, name: str) -> None:
        """Stop a child and keep its spec (a temporary child's spec is removed)."""
        async with self._lock:
            self._check_open()
            await self._stop_all(self._state.terminate(name).stop)

    async def restart_child(self, name: str) -> ChildInfo:
        """Start a terminated child again (not counted toward intensity)."""
        async with self._lock:
            self._check_open()
            self._state.manual_restart(name)
            try:
                await self._start(name)
            except _StartFailed as failure:
                self._state.mark_failed(name)
                raise ChildStartError(name, failure.reason) from None
            return self._info(name)

    async def stopped_by_plan(self, actor_id: str) -> bool:
        """Whether this supervisor stopped the actor ``actor_id`` (hex) on purpose
        (one of the last few hundred it stopped), rather than seeing it die."""
        return actor_id in self._planned_stops

    async def child_spec(self, name: str) -> ChildSpec:
        """The spec the child ``name`` is started (and restarted) from."""
        return self._state.get(name).spec

    async def replace_child(self, spec: ChildSpec, *, restart: bool = True) -> ChildInfo:
        """Swap the spec of the child named ``spec.name`` (OTP's code change): a later
        restart starts the new spec. With ``restart`` a running child is stopped
        gracefully (its ``terminate`` lets requests in flight finish) and started from
        the new spec, not counted toward intensity; if that start fails the old spec
        is put back and started again, and ``ChildStartError`` is raised."""
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"replace_child() takes a ChildSpec, got {type(spec).__name__}")
        async with self._lock:
            self._check_open()
            old = self._state.replace_spec(spec)
            self._emit("child.spec_replaced", child=spec.name, labels=dict(spec.labels))
            if not restart or self._state.get(spec.name).state != "running":
                return self._info(spec.name)
            await self._stop_all((spec.name,))
            self._state.manual_restart(spec.name)
            self._state.get(spec.name).starts -= 1  # an upgrade is not a restart: not counted
            try:
                await self._start(spec.name)
            except _StartFailed as failure:
                self._state.replace_spec(old)
                try:
                    await self._start(spec.name)
                except _StartFailed:
                    self._state.mark_failed(spec.name)
                raise ChildStartError(spec.name, failure.reason) from None
            return self._info(spec.name)

    async def delete_child(self, name: str) -> None:
        """Forget a terminated child's spec."""
        async with self._lock:
            self._check_open()
            self._state.delete(name)

    # Reads take no lock: state changes only between awaits on this event loop,
    # and a read during a long restart should show it ("restarting").
    async def which_children(self) -> list[ChildInfo]:
        return self._state.info()

    async def count_children(self) -> ChildCounts:
        return self._state.counts()

    async def config(self) -> SupervisorConfig:
        return self._config

    async def tree(self) -> TreeNode:
        """This supervisor and its children, child supervisors' subtrees nested."""
        nodes = [await self._subtree(info) for info in self._state.info()]
        return TreeNode(
            name=self.name,
            kind="supervisor",
            state="terminated" if self._stopped else "running",
            strategy=self._config.strategy,
            children=tuple(nodes),
        )

    # --- starting ------------------------------------------------------------

    async def _start_initial(self) -> None:
        for name in self._state.names():
            try:
                await self._start(name)
            except _StartFailed as failure:
                self._state.mark_failed(name)
                await self._stop_all(self._state.shutdown("failed_to_start_child").stop)
                self._stopped = ExitReason("shutdown", f"failed_to_start_child {name}")
                await self._flush_events()
                raise ChildStartError(name, failure.reason) from None

    async def _start(self, name: str) -> None:
        """Create the child's actor, wait until it is ready, and watch it."""
        spec = self._state.get(name).spec
        handle = await self._create(spec)
        try:
            info = await asyncio.wait_for(handle.ready.remote(), spec.start_timeout)
        except Exception as exc:  # __init__ raised, ready() raised, or too slow
            ray.kill(handle)
            reason = (
                f"not ready within {spec.start_timeout}s"
                if isinstance(exc, asyncio.TimeoutError)
                else describe_error(exc)
            )
            self._emit("child.start_failed", child=name, reason=reason)
            raise _StartFailed(reason) from None
        self._state.mark_running(name, info.get("actor_id"), info.get("node_id"))
        run = _Running(handle, handle.watch.remote())
        run.watcher = self._spawn(self._watch(name, run))
        if self._config.ping_interval is not None:
            run.pinger = self._spawn(self._ping(run))
        self._runs[name] = run
        self._announce_start(name)

    async def _create(self, spec: ChildSpec) -> Any:
        actor_cls = self._actor_class(spec.cls)
        options = {
            **spec.actor_options,
            "name": spec.name,
            "namespace": NAMESPACE,
            "max_restarts": 0,  # OTP restarts only: Ray's would compete
            "max_task_retries": 0,
        }
        deadline = time.monotonic() + NAME_RELEASE_TIMEOUT
        while True:
            try:
                return actor_cls.options(**options).remote(*spec.args, **spec.kwargs)
            except ActorAlreadyExistsError:
                if not await _release_if_dead(spec.name) and time.monotonic() >= deadline:
                    raise _StartFailed(
                        f"actor name {spec.name!r} in namespace {NAMESPACE!r} is held by another "
                        "actor that is still alive"
                    ) from None
                await asyncio.sleep(POLL_INTERVAL)
            except Exception as exc:  # bad actor_options, unpicklable args, ...
                raise _StartFailed(describe_error(exc)) from None

    def _actor_class(self, cls: type) -> Any:
        actor_cls = self._actor_classes.get(cls)
        if actor_cls is None:
            actor_cls = self._actor_classes[cls] = ray.remote(supervised_class(cls))
        return actor_cls

    def _announce_start(self, name: str) -> None:
        rec = self._state.get(name)
        data = {"child": name, "actor_id": rec.actor_id, "node_id": rec.node_id}
        self._emit("child.started", restarts=rec.restarts, **data)
        if rec.restarts:
            self._emit("child.restarted", restarts=rec.restarts, **data)

    # --- watching ------------------------------------------------------------

    async def _watch(self, name: str, run: _Running) -> ExitReason:
        """Wait for the child to go; report it unless the supervisor is stopping it."""
        try:
            reason = ExitReason.parse(await run.watch_ref)
        except RayActorError as exc:
            reason = run.forced or reason_from_actor_error(exc)
        except RayError as exc:  # watch() itself failed: the child is broken
            reason = ExitReason("error", describe_error(exc))
        if not run.stopping:
            self._spawn(self._on_exit(name, run, reason))
        return reason

    async def _ping(self, run: _Running) -> None:
        interval = self._config.ping_interval
        timeout = self._config.ping_timeout
        assert interval is not None
        while True:
            await asyncio.sleep(interval)
            if run.stopping or (run.watcher is not None and run.watcher.done()):
                return
            try:
                await asyncio.wait_for(run.handle.ping.remote(), timeout)
            except asyncio.TimeoutError:
                if not run.stopping:
                    run.forced = ExitReason("hung", f"no answer to ping within {timeout}s")
                    ray.kill(run.handle)
                return
            except RayError:
                return  # dead: the watcher reports it

    async def _on_exit(self, name: str, run: _Running, reason: ExitReason) -> None:
        async with self._lock:
            if self._stopped is not None or self._runs.get(name) is not run:
                return  # stale: the child was stopped or replaced meanwhile
            del self._runs[name]
            _dispose(run)
            self._emit(
                "child.exited",
                child=name,
                reason=reason.kind,
                detail=reason.detail,
                actor_id=run.actor_id,
            )
            await self._execute(self._state.child_exited(name, reason))

    # --- carrying out plans --------------------------------------------------

    async def _execute(self, plan: Plan) -> None:
        """Stop, then start, as planned; a failed start is retried as a new restart."""
        while True:
            await self._stop_all(plan.stop)
            if plan.shutdown is not None:
                await self._give_up(plan.shutdown)
                return
            failed = await self._start_all(plan.start)
            if failed is None:
                return
            plan = self._state.start_failed(failed, plan.origin)

    async def _start_all(self, names: Sequence[str]) -> str | None:
        """Start ``names`` in order; the name of the first that fails, if any."""
        for name in names:
            try:
                await self._start(name)
            except _StartFailed:
                return name
        return None

    async def _stop_all(self, names: Sequence[str]) -> None:
        for name in names:
            await self._stop(name)
            self._state.mark_stopped(name)

    async def _stop(self, name: str, reason: str = "shutdown") -> None:
        """OTP's shutdown: ask the child to terminate within its spec's
        ``shutdown`` time, then kill it and wait for Ray to confirm the death."""
        run = self._runs.pop(name, None)
        if run is None:
            return
        run.stopping = True
        self._planned_stops.append(run.actor_id)
        if run.pinger is not None:
            run.pinger.cancel()
        spec = self._state.get(name).spec
        await self._ask_to_terminate(run, spec, reason)
        ray.kill(run.handle)
        if run.watcher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run.watcher), STOP_CONFIRM_TIMEOUT)
            except asyncio.TimeoutError:
                logger.warning("%s: no death notice for %s after kill", self.name, name)
        self._emit(
            "child.exited",
            child=name,
            reason=SHUTDOWN.kind,
            detail=f"stopped by {self.name}",
            actor_id=run.actor_id,
        )

    async def _ask_to_terminate(self, run: _Running, spec: ChildSpec, reason: str) -> None:
        if spec.shutdown == "brutal_kill" or not callable(getattr(spec.cls, "terminate", None)):
            return
        if run.watcher is not None and run.watcher.done():
            return  # already gone
        timeout = None if spec.shutdown == "infinity" else float(spec.shutdown)
        try:
            await asyncio.wait_for(run.handle.terminate.remote(reason), timeout)
        except asyncio.TimeoutError:
            self._emit("child.shutdown_timeout", child=spec.name, timeout=timeout)
        except RayError as exc:
            logger.info("%s: terminate() of %s failed: %s", self.name, spec.name, exc)

    async def _give_up(self, detail: str) -> None:
        """Exit with reason ``shutdown``: the parent sees a child exit and decides."""
        self._stopped = ExitReason("shutdown", detail)
        kind = "supervisor.escalated" if detail == REACHED_MAX_RESTART_INTENSITY else "supervisor.stopped"
        self._emit(
            kind,
            reason=detail,
            max_restarts=self._config.max_restarts,
            max_seconds=self._config.max_seconds,
        )
        await self._flush_events()
        self.exit(self._stopped)

    # --- helpers ---------------------------------------------------------------

    async def _subtree(self, info: ChildInfo) -> TreeNode:
        kind = "supervisor" if info.is_supervisor else "worker"
        labels = self._state.get(info.name).spec.labels if info.name in self._state.names() else {}
        node = TreeNode(
            name=info.name,
            kind=kind,
            state=info.state,
            restarts=info.restarts,
            labels=tuple(labels.items()),
        )
        run = self._runs.get(info.name)
        if info.is_supervisor and run is not None:
            try:
                sub: TreeNode = await asyncio.wait_for(run.handle.tree.remote(), TREE_TIMEOUT)
            except (asyncio.TimeoutError, RayError):
                return node
            node = dataclasses.replace(node, strategy=sub.strategy, children=sub.children)
        return node

    def _info(self, name: str) -> ChildInfo:
        return next(info for info in self._state.info() if info.name == name)

    def _check_open(self) -> None:
        if self._stopped is not None:
            raise SupervisorStoppedError(self.name, str(self._stopped))

    def _emit(self, kind: str, **data: Any) -> None:
        events.emit(kind, self.name, **data)

    async def _flush_events(self) -> None:
        """Make sure the cluster log holds our events before this process may die."""
        ref = _event_remote.flush_ref() if ray.is_initialized() else None
        if ref is None:
            return
        try:
            await asyncio.wait_for(ref, 5.0)
        except (asyncio.TimeoutError, RayError):
            logger.warning("%s: events not confirmed by the event log", self.name)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        # A bug in the supervisor itself: let it crash, so its parent restarts it.
        logger.error("%s: supervision task failed", self.name, exc_info=error)
        self._emit("supervisor.crashed", error=describe_error(error))
        self._stopped = ExitReason("error", describe_error(error))
        self.exit(self._stopped)


def _dispose(run: _Running) -> None:
    if run.pinger is not None:
        run.pinger.cancel()
    # Kill even a dead actor: Ray frees a crashed actor's name only then.
    ray.kill(run.handle)


async def _release_if_dead(name: str) -> bool:
    """Free ``name`` if the actor holding it is dead; False if it is alive."""
    try:
        holder = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return True
    try:
        await asyncio.wait_for(holder.__ray_ready__.remote(), 2.0)
    except RayActorError:
        ray.kill(holder)  # dead but still registered: this releases the name
        return True
    except asyncio.TimeoutError:
        return False
    return False


# --- driver-side helpers ---------------------------------------------------------


def supervisor_spec(
    name: str,
    children: Sequence[ChildSpec] = (),
    *,
    restart: Restart = "permanent",
    shutdown: Shutdown | None = None,
    significant: bool = False,
    actor_options: dict[str, Any] | None = None,
    start_timeout: float | None = None,
    **settings: Any,
) -> ChildSpec:
    """A ``ChildSpec`` for a nested supervisor (``settings``: ``SupervisorConfig`` fields)."""
    config = SupervisorConfig(**settings)
    return ChildSpec(
        name=name,
        cls=Supervisor,
        args=(tuple(children), config),
        restart=restart,
        shutdown=shutdown,
        significant=significant,
        actor_options=actor_options or {},
        start_timeout=start_timeout,
    )


def start_supervisor(
    name: str,
    children: Sequence[ChildSpec] = (),
    *,
    detached: bool = True,
    actor_options: dict[str, Any] | None = None,
    event_log: bool = True,
    timeout: float | None = None,
    **settings: Any,
) -> Any:
    """Start a root supervisor and its children; returns its actor handle.

    Raises ``ChildStartError`` (naming the child and the reason) if a child
    fails to start; the children already started are stopped first.
    """
    handle = _create_root(name, children, detached, actor_options, event_log, settings)
    try:
        ray.get(handle.ready.remote(), timeout=timeout)
    except Exception as exc:
        ray.kill(handle)
        raise _root_start_error(name, exc, timeout) from None
    return handle


async def start_supervisor_async(
    name: str,
    children: Sequence[ChildSpec] = (),
    *,
    detached: bool = True,
    actor_options: dict[str, Any] | None = None,
    event_log: bool = True,
    timeout: float | None = None,
    **settings: Any,
) -> Any:
    """``start_supervisor`` for async code (does not block the event loop while children start)."""
    handle = _create_root(name, children, detached, actor_options, event_log, settings)
    try:
        await asyncio.wait_for(handle.ready.remote(), timeout)
    except Exception as exc:
        ray.kill(handle)
        raise _root_start_error(name, exc, timeout) from None
    return handle


def get_supervisor(name: str) -> Any:
    """Attach to a running supervisor by name (from any driver in the cluster)."""
    return ray.get_actor(name, namespace=NAMESPACE)


def stop_supervisor(supervisor: Any, *, timeout: float | None = None) -> None:
    """Stop a supervisor's children in reverse order, then the supervisor itself."""
    handle = get_supervisor(supervisor) if isinstance(supervisor, str) else supervisor
    try:
        ray.get(handle.terminate.remote("shutdown"), timeout=timeout)
    except RayActorError:
        pass  # already dead: its children died with it
    finally:
        ray.kill(handle)


def _create_root(
    name: str,
    children: Sequence[ChildSpec],
    detached: bool,
    actor_options: dict[str, Any] | None,
    event_log: bool,
    settings: dict[str, Any],
) -> Any:
    config = SupervisorConfig(**settings)  # invalid settings fail here, in the caller
    specs = tuple(children)
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec instances, got {spec!r}")
    if event_log:
        events.start_event_log()
    options: dict[str, Any] = {**(actor_options or {}), "name": name, "namespace": NAMESPACE}
    if detached:
        options["lifetime"] = "detached"
    try:
        return ray.remote(Supervisor).options(max_restarts=0, **options).remote(specs, config)
    except ActorAlreadyExistsError:
        raise ChildStartError(name, "a supervisor of that name is already running") from None


def _root_start_error(name: str, exc: Exception, timeout: float | None) -> Exception:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChildStartError):
        return ChildStartError(cause.child, cause.reason)
    if isinstance(exc, (GetTimeoutError, asyncio.TimeoutError)):
        return ChildStartError(name, f"not ready within {timeout}s")
    return ChildStartError(name, describe_error(exc))
