"""Serving a program: `ModuleActor` replicas behind a `ServiceHandle`.

``dspex.serve(program, name="qa", replicas=2)`` starts two `ModuleActor`
replicas, ``dspex.serve.qa.0`` and ``dspex.serve.qa.1``, as permanent children
of the runtime's ``dspex.services`` supervisor (OTP's GenServer per module
instance). Each holds the program and the settings it runs with (LM, adapter)
and answers ``acall(**inputs)`` with asyncio concurrency inside.

The returned `ServiceHandle` holds names, not actors, so it pickles and keeps
working after a replica is restarted. A request goes to the replica with the
fewest requests in flight from this handle (round-robin among equals: the
handle knows only its own load, which costs no extra actor call). If the
replica dies under a request, the request is sent once more to another replica
(``retries``); a request that failed every attempt is recorded in the cluster's
dead letters (``dspex.dead_letters()``) and raises `ReplicaDiedError`. An
error raised by the program itself is the caller's, raised as is, and not
retried: another replica would run the same code on the same input.

Served requests are interactive work (`dspex.primitives.workload`): an LM
request that meets an open circuit breaker fails fast with `CircuitOpenError`,
so the caller can fall back or report, where an evaluation would wait for the
provider's probe.

Hot swap (OTP's code change): ``handle.update(new_program)`` rolls the service
replica by replica. The supervisor swaps the replica's child spec
(``replace_child``) and restarts it after it drains: a draining replica refuses new
requests (`ReplicaDrainingError`, which handles resend elsewhere without counting
an attempt) and finishes those in flight on its old version. The version and the
one before it live in the child specs, so a replica that dies at any point restarts
on the version it should run, and ``handle.rollback()`` works from any driver.
``handle.update(state=compiled.dump_state())`` swaps demos and instructions inside
the running replicas instead (same processes). ``http=True`` adds an HTTP ingress
(`dspex.runtime.serve_http`).

LM API keys do not travel with the program (see `dspex.clients.lm`): give
the replicas the key through their environment (``runtime_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from dspex.errors import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ConfigurationError,
    RemoteProgramError,
    ReplicaDiedError,
    ReplicaDrainingError,
    RuntimeNotRunningError,
    ServiceUnavailableError,
    ServiceUpdateError,
)
from dspex.runtime.names import NAMESPACE, SERVICE_PREFIX, SERVICES_SUPERVISOR
from dspex.runtime.supervision.child_spec import ChildSpec
from dspex.runtime.supervision.reasons import first_line

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 64
# Items a streamed request may have produced on its replica and not yet consumed by the
# caller: past this the replica's generator waits (Ray's generator backpressure), then
# its program does (streamify's bounded queue), then its LM stream is read no further.
STREAM_BACKPRESSURE = 8
RESOLVE_TIMEOUT = 30.0  # a replica restart takes ~1 s; a start on a busy node longer
START_TIMEOUT = 120.0
POLL_INTERVAL = 0.05
_NAME = re.compile(r"[A-Za-z0-9_-]+")
# A replica being updated or stopped lets its requests in flight finish for this long
# (LM calls can take tens of seconds) before the supervisor kills it.
REPLICA_DRAIN_TIMEOUT = 60.0
UPDATE_TIMEOUT = 600.0
# Replicas answer LM-bound requests with asyncio: they need no CPU slot, and
# spreading them over nodes keeps a service up when one node goes.
REPLICA_OPTIONS: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": "SPREAD"}


# --- the replica ---------------------------------------------------------------------


class ModuleActor:
    """One replica of a served program: a plain class, run as a Ray actor by the
    ``dspex.services`` supervisor (a unit test can instantiate it directly).

    ``payload``: ``(program, settings)`` pickled by ``serve`` (bytes, not an
    ObjectRef: a ref dies with the driver that made it, and a replica restarted
    after that driver exited must still find its program).
    """

    def __init__(
        self,
        payload: bytes,
        *,
        service: str,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        use_pools: bool = True,
        version: int = 1,
        rollback: tuple[int, bytes] | None = None,
    ) -> None:
        from ray import cloudpickle

        from dspex.evaluate.runner import ProgramCaller

        del rollback  # the version before this one: kept in the child spec for handle.rollback()
        program, settings = cloudpickle.loads(payload)
        self._program = program
        self.service = service
        self.version = version
        self._max_concurrency = max_concurrency
        self._draining = False
        self._settings: dict[str, Any] = settings
        self._caller = ProgramCaller(program, max_concurrency)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._served = 0
        self._errors = 0
        self._last_streamed: Any = None  # the StreamingProgram of the latest streamed request
        if use_pools:
            from dspex.runtime.pools.pool_client import enable_pools

            enable_pools()  # the runtime is up by definition: LM calls go to its pools

    async def acall(self, **inputs: Any) -> Any:
        """Run the program on ``inputs`` (its own errors are raised to the caller)."""
        from dspex.primitives.settings import context
        from dspex.primitives.workload import interactive_work

        self._refuse_if_draining()
        async with self._slots:
            self._started()
            try:
                # Interactive: an LM request that meets an open circuit fails fast
                # (the caller can fall back) rather than waiting for the provider.
                with context(**self._settings), interactive_work():
                    result = await self._caller(inputs)
            except Exception as exc:
                self._errors += 1
                raise _portable(exc) from None
            finally:
                self._finished()
        self._served += 1
        return result

    async def stream(
        self,
        inputs: dict[str, Any],
        listeners: list[tuple[str, str | None, bool]],
        status_message_provider: Any = None,
        include_final_prediction: bool = True,
    ) -> AsyncIterator[Any]:
        """Run the program on ``inputs`` streamed (`dspex.streamify`), yielding its items;
        called as a Ray streaming generator (``num_returns="streaming"``). The listeners
        come as (field, predictor name, allow_reuse) and are resolved against this
        replica's copy of the program. A cancelled call (the consumer stopped) cancels
        the run, which closes its LM stream."""
        from dspex.primitives.settings import context
        from dspex.primitives.workload import interactive_work
        from dspex.streaming import StreamListener, streamify

        self._refuse_if_draining()
        async with self._slots:
            self._started()
            try:
                with context(**self._settings), interactive_work():
                    streamed = self._last_streamed = streamify(
                        self._program,
                        status_message_provider=status_message_provider,
                        stream_listeners=[
                            StreamListener(field, predict_name=name, allow_reuse=reuse)
                            for field, name, reuse in listeners
                        ],
                        include_final_prediction_in_output_stream=include_final_prediction,
                    )
                    async for item in streamed.astream(**inputs):
                        yield item
            except Exception as exc:
                self._errors += 1
                raise _portable(exc) from None
            finally:
                self._finished()
        self._served += 1

    async def load_state(self, state: dict[str, Any], version: int) -> int:
        """Swap the program's learned state (demos, instructions) in place, keeping the
        process: requests in flight finish on the program object they started with (a
        copy is loaded, then swapped in), later ones run the new state. Returns the pid."""
        import copy

        from dspex.evaluate.runner import ProgramCaller

        program = copy.deepcopy(self._program)
        program.load_state(state)
        self._program, self._caller = program, ProgramCaller(program, self._max_concurrency)
        self.version = version
        return os.getpid()

    async def stats(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "pid": os.getpid(),
            "in_flight": self._in_flight,
            "served": self._served,
            "errors": self._errors,
            # the queue counters of the latest streamed request, live while it runs
            "last_stream": dataclasses.asdict(stats) if (stats := getattr(self._last_streamed, "last_stats", None)) else {},
        }

    async def terminate(self, reason: str) -> None:
        """Drain: refuse new requests (handles send them to another replica) and let
        those in flight finish (the supervisor kills us after the spec's ``shutdown``
        seconds anyway)."""
        del reason
        self._draining = True
        await self._idle.wait()

    def _refuse_if_draining(self) -> None:
        if self._draining:
            raise ReplicaDrainingError(f"{SERVICE_PREFIX}{self.service} (pid {os.getpid()})")

    def _started(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (the caller gets its real type), else a
    `RemoteProgramError` with its type, message and traceback."""
    from ray import cloudpickle

    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RemoteProgramError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), trace)


# --- starting and finding services -----------------------------------------------------


def replica_name(service: str, index: int) -> str:
    return f"{SERVICE_PREFIX}{service}.{index}"


def serve(
    program: Any,
    name: str,
    *,
    replicas: int = 1,
    retry_on_replica_death: bool = True,
    retries: int = 1,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    actor_options: dict[str, Any] | None = None,
    use_pools: bool = True,
    timeout: float = START_TIMEOUT,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body: int | None = None,
) -> ServiceHandle:
    """Serve ``program`` from ``replicas`` supervised `ModuleActor` replicas; returns its handle.

    The program runs with this process's settings (``lm``, ``adapter``, ...) as
    they are now. ``retries``: how many more replicas a request whose replica
    died is sent to (0 when ``retry_on_replica_death`` is False).
    ``max_concurrency``: requests one replica runs at once. ``actor_options``:
    Ray options of each replica (default ``num_cpus=0``, spread over nodes).
    Needs ``dspex.init()``; raises ``ConfigurationError`` when ``name`` is taken.

    ``http=True`` also serves it over HTTP (`dspex.runtime.serve_http`): ``POST /<name>``
    on ``host`` (127.0.0.1 unless given) and ``port`` (0: a free one); ``handle.url``
    says where. ``max_body``: the largest request body accepted (default 1 MiB).
    """
    _check_serve_args(program, name, replicas, retries, max_concurrency)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    services = _services_supervisor()
    payload = _pack(program)
    specs = [
        _replica_spec(name, i, payload, max_concurrency, use_pools, actor_options)
        for i in range(replicas)
    ]
    retries = retries if retry_on_replica_death else 0
    ingress = None
    if http:
        ingress = _ingress_spec(name, specs, program, host, port, retries, max_body)
        specs.append(ingress)
    _start_replicas(services, name, specs, timeout)
    if ingress is not None:
        _pin_port(services, ingress)
    return ServiceHandle(
        name,
        [spec.name for spec in specs if spec is not ingress],
        retries=retries,
        ingress=None if ingress is None else ingress.name,
    )


def get_service(name: str, *, retries: int = 1) -> ServiceHandle:
    """The handle of a service started by any driver (``serve(..., name=name)``)."""
    import ray

    children = ray.get(_services_supervisor().which_children.remote(), timeout=30)
    prefix = f"{SERVICE_PREFIX}{name}."
    names = [
        child.name
        for child in children
        if child.name.startswith(prefix) and child.name[len(prefix):].isdigit()
    ]
    if not names:
        raise ChildNotFoundError(f"{prefix}*")
    names.sort(key=lambda replica: int(replica.rsplit(".", 1)[1]))
    ingress = f"{prefix}http"
    has_ingress = any(child.name == ingress for child in children)
    return ServiceHandle(name, names, retries=retries, ingress=ingress if has_ingress else None)


def _check_serve_args(
    program: Any, name: str, replicas: int, retries: int, max_concurrency: int
) -> None:
    if not callable(program) and not callable(getattr(program, "acall", None)):
        raise TypeError(
            f"cannot serve a {type(program).__name__}: a program needs `async acall(**inputs)` "
            "or must be callable"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a service name is letters, digits, '_' and '-', got {name!r}")
    for label, value, least in (
        ("replicas", replicas, 1),
        ("retries", retries, 0),
        ("max_concurrency", max_concurrency, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{label} must be an int >= {least}, got {value!r}")


def _services_supervisor() -> Any:
    import sys

    ray = sys.modules.get("ray")
    handle = None
    if ray is not None and ray.is_initialized():
        try:
            handle = ray.get_actor(SERVICES_SUPERVISOR, namespace=NAMESPACE)
        except ValueError:
            handle = None
    if handle is None:
        raise RuntimeNotRunningError(
            f"serving needs the dspex runtime (its {SERVICES_SUPERVISOR!r} supervisor): "
            "call dspex.init() first"
        )
    return handle


def _pack(program: Any, shipped: dict[str, Any] | None = None) -> bytes:
    """The replicas' payload: ``program`` with ``shipped`` settings (this process's by default)."""
    from ray import cloudpickle

    from dspex.primitives.settings import settings
    from dspex.runtime.evaluation.eval_worker import SHIPPED_SETTINGS

    if shipped is None:
        shipped = {key: settings.get(key) for key in SHIPPED_SETTINGS}
    try:
        return cloudpickle.dumps((program, shipped))
    except Exception as exc:
        raise ConfigurationError(
            f"cannot pickle the program or its settings (lm, adapter, callbacks) to send them to "
            f"the replicas: {type(exc).__name__}: {exc}"
        ) from exc


def _ingress_spec(
    service: str,
    replicas: Sequence[ChildSpec],
    program: Any,
    host: str,
    port: int,
    retries: int,
    max_body: int | None,
) -> ChildSpec:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from dspex.runtime.serve_http import DEFAULT_MAX_BODY, HttpIngress, ingress_name

    kwargs: dict[str, Any] = {
        "fields": _pack_fields(program),
        "host": host,
        "port": port,
        "retries": retries,
        "max_body": max_body or DEFAULT_MAX_BODY,
    }
    return ChildSpec(
        name=ingress_name(service),
        cls=HttpIngress,
        args=(service, tuple(spec.name for spec in replicas)),
        kwargs=kwargs,
        restart="permanent",
        # On this driver's node, where 127.0.0.1 is the caller's own address; soft, so
        # it restarts elsewhere if that node goes.
        actor_options={
            "num_cpus": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True
            ),
        },
        labels={"url": f"{host}:{port}"},
    )


def _pack_fields(program: Any) -> bytes:
    from ray import cloudpickle

    from dspex.runtime.serve_http import input_fields

    return cloudpickle.dumps(input_fields(program))


def _pin_port(services: Any, ingress: ChildSpec) -> None:
    """Write the port the ingress bound into its spec: a restart listens there again."""
    import ray

    actor = ray.get_actor(ingress.name, namespace=NAMESPACE)
    port = ray.get(actor.stats.remote(), timeout=30)["port"]
    host = ingress.kwargs["host"]
    pinned = dataclasses.replace(
        ingress, kwargs={**ingress.kwargs, "port": port}, labels={"url": f"{host}:{port}"}
    )
    ray.get(services.replace_child.remote(pinned, restart=False), timeout=30)


def _unpack(spec: ChildSpec) -> tuple[Any, dict[str, Any]]:
    from ray import cloudpickle

    program, shipped = cloudpickle.loads(spec.args[0])
    return program, shipped


def _with_state(spec: ChildSpec, state: dict[str, Any]) -> bytes:
    """The spec's payload with its program's learned state replaced by ``state``."""
    program, shipped = _unpack(spec)
    if not callable(getattr(program, "load_state", None)):
        raise ServiceUpdateError(
            spec.kwargs.get("service", spec.name),
            f"update(state=...) needs a program with load_state(); a {type(program).__name__} has none",
        )
    program.load_state(state)
    return _pack(program, shipped)


def _version_of(spec: ChildSpec) -> int:
    return int(spec.kwargs.get("version", 1))


def _versioned(
    spec: ChildSpec, payload: bytes, version: int, *, keep_rollback: bool = True
) -> ChildSpec:
    """``spec`` running ``payload`` as ``version``; the version it replaces is kept for rollback."""
    rollback = (_version_of(spec), spec.args[0]) if keep_rollback else None
    return dataclasses.replace(
        spec,
        args=(payload,),
        kwargs={**spec.kwargs, "version": version, "rollback": rollback},
        labels={**spec.labels, "version": str(version)},
    )


async def _stopped_by_plan(actor: Any) -> bool:
    """Whether the supervisor stopped ``actor`` on purpose: it drained first, so a request
    that met it dead never ran there (asked only after a death, never on the hot path)."""
    try:
        return bool(await _services_supervisor().stopped_by_plan.remote(actor._actor_id.hex()))
    except Exception:  # no supervisor to ask: count it as a death
        return False


def _is_draining(exc: BaseException) -> bool:
    return isinstance(exc, ReplicaDrainingError) or isinstance(
        getattr(exc, "cause", None), ReplicaDrainingError
    )


def _replica_spec(
    service: str,
    index: int,
    payload: bytes,
    max_concurrency: int,
    use_pools: bool,
    actor_options: dict[str, Any] | None,
) -> ChildSpec:
    return ChildSpec(
        name=replica_name(service, index),
        cls=ModuleActor,
        args=(payload,),
        kwargs={
            "service": service,
            "max_concurrency": max_concurrency,
            "use_pools": use_pools,
            "version": 1,
        },
        restart="permanent",
        shutdown=REPLICA_DRAIN_TIMEOUT,
        actor_options={**REPLICA_OPTIONS, **(actor_options or {})},
        labels={"version": "1"},
    )


def _start_replicas(
    services: Any, service: str, specs: Sequence[ChildSpec], timeout: float
) -> None:
    import ray

    started: list[str] = []
    try:
        for spec in specs:
            ray.get(services.start_child.remote(spec), timeout=timeout)
            started.append(spec.name)
    except ChildAlreadyExistsError:
        _remove(services, started)
        raise ConfigurationError(
            f"a service named {service!r} is already served; dspex.get_service({service!r}) "
            "returns its handle and handle.stop() removes it"
        ) from None
    except BaseException:
        _remove(services, started)  # all replicas or none
        raise


def _remove(services: Any, names: Sequence[str]) -> None:
    import ray

    for name in reversed(names):
        try:
            ray.get(services.terminate_child.remote(name), timeout=60)
            ray.get(services.delete_child.remote(name), timeout=60)
        except ChildNotFoundError:
            continue  # already gone


# --- the handle ------------------------------------------------------------------------


class ServiceHandle:
    """Calls a served program: ``handle(**inputs)`` or ``await handle.acall(**inputs)``.

    Picklable: it carries the replicas' names and re-resolves them by name.
    """

    def __init__(
        self,
        name: str,
        replicas: Sequence[str],
        *,
        retries: int = 1,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        ingress: str | None = None,
    ) -> None:
        self.name = name
        self.replicas = tuple(replicas)
        self.retries = retries
        self.resolve_timeout = resolve_timeout
        self.ingress = ingress  # the HTTP ingress child's name, if served over HTTP
        self._init_local_state()

    def _init_local_state(self) -> None:
        self._lock = threading.Lock()  # sync calls run on dspex's loop, async ones on yours
        self._handles: dict[str, Any] = {}
        self._dead: set[str] = set()  # actor ids seen dead: the name may still point at them
        self._in_flight: dict[str, int] = dict.fromkeys(self.replicas, 0)
        self._turn = 0

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replicas": self.replicas,
            "retries": self.retries,
            "resolve_timeout": self.resolve_timeout,
            "ingress": self.ingress,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"ingress": None, **state})
        self._init_local_state()

    def __repr__(self) -> str:
        return f"ServiceHandle({self.name!r}, replicas={len(self.replicas)})"

    # --- calling ---------------------------------------------------------------

    def __call__(self, **inputs: Any) -> Any:
        from dspex.utils.aio import run_sync

        return run_sync(self.acall(**inputs))

    async def acall(self, **inputs: Any) -> Any:
        """Run the program on one replica; on a replica's death, on another."""
        from ray.exceptions import RayActorError, RayTaskError

        tried: list[str] = []
        first_failed_at: float | None = None
        planned = 0  # replicas met stopped on purpose (an update): not attempts
        while True:
            replica, actor = await self._pick(tried)
            self._count(replica, +1)
            try:
                return await actor.acall.remote(**inputs)
            except RayTaskError as exc:
                if _is_draining(exc):  # never started: another replica, no attempt counted
                    self._forget(replica, actor)
                    continue
                raise  # the program's own error (as its own type when it can be)
            except RayActorError as exc:
                self._forget(replica, actor)
                if planned < self._planned_limit() and await _stopped_by_plan(actor):
                    planned += 1  # drained before it was stopped: the request never ran
                    continue
                tried.append(replica)
                first_failed_at = first_failed_at or time.time()
                if len(tried) > self.retries:
                    error = await self._dead_letter(
                        inputs, replica, first_line(str(exc)), len(tried), first_failed_at
                    )
                    raise error from exc
                logger.warning("dspex: %s died under a request; sending it to another replica", replica)
            finally:
                self._count(replica, -1)

    async def stream(
        self,
        *,
        stream_listeners: Sequence[Any] | None = None,
        status_message_provider: Any = None,
        include_final_prediction_in_output_stream: bool = True,
        **inputs: Any,
    ) -> AsyncIterator[Any]:
        """Run the program on one replica, streamed: yields what `dspex.streamify` yields
        there (`StreamResponse` chunks of the listened fields, `StatusMessage`s, the
        `Prediction` last), as the replica produces them (a Ray streaming generator).

        Listeners name a field (and optionally ``predict_name``); they are resolved
        against the replica's program. A replica that dies before the first item is
        replaced as for `acall`; one that dies mid-stream raises `ReplicaDiedError`
        (the consumer has seen part of an answer) and the request goes to the dead
        letters. Stopping early (``aclose()``) cancels the replica's run.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        listeners = [
            (listener.signature_field_name, listener.predict_name, listener.allow_reuse)
            for listener in stream_listeners or ()
        ]
        tried: list[str] = []
        first_failed_at: float | None = None
        delivered = 0
        planned = 0
        while True:
            replica, actor = await self._pick(tried)
            self._count(replica, +1)
            items = actor.stream.options(
                num_returns="streaming", _generator_backpressure_num_objects=STREAM_BACKPRESSURE
            ).remote(
                inputs, listeners, status_message_provider, include_final_prediction_in_output_stream
            )
            finished = False
            try:
                async for ref in items:
                    item = await ref
                    delivered += 1
                    yield item
                finished = True
                return
            except RayTaskError as exc:
                finished = True
                if not delivered and _is_draining(exc):
                    self._forget(replica, actor)
                    continue
                raise  # the program's own error
            except RayActorError as exc:
                finished = True
                self._forget(replica, actor)
                if not delivered and planned < self._planned_limit() and await _stopped_by_plan(actor):
                    planned += 1
                    continue
                tried.append(replica)
                first_failed_at = first_failed_at or time.time()
                if delivered or len(tried) > self.retries:
                    error = await self._dead_letter(
                        inputs, replica, first_line(str(exc)), len(tried), first_failed_at
                    )
                    raise error from exc
                logger.warning("dspex: %s died before streaming; sending the request to another replica", replica)
            finally:
                self._count(replica, -1)
                if not finished:  # the consumer stopped early: stop the replica's run too
                    ray.cancel(items)

    def stream_sync(self, **kwargs: Any) -> Iterator[Any]:
        """`stream` as a sync generator (for scripts without an event loop)."""
        from dspex.streaming import apply_sync_streaming

        return apply_sync_streaming(self.stream(**kwargs))

    @property
    def url(self) -> str | None:
        """Where the program answers over HTTP (``POST``), None unless served with ``http=True``."""
        import ray

        if self.ingress is None:
            return None
        spec = ray.get(_services_supervisor().child_spec.remote(self.ingress), timeout=30)
        host, port = spec.kwargs["host"], spec.kwargs["port"]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/{self.name}"

    def _planned_limit(self) -> int:
        # Each replica can be met stopped once per update or rollback; more in one request
        # means stops in a loop, which the request should not ride out.
        return 2 * len(self.replicas)

    def in_flight(self) -> dict[str, int]:
        """Requests this handle has in flight, per replica."""
        with self._lock:
            return dict(self._in_flight)

    def stop(self) -> None:
        """Remove the replicas from the supervisor (in-flight requests finish first,
        up to 5 s). Calls made afterwards raise ``ServiceUnavailableError``."""
        _remove(_services_supervisor(), (*self.replicas, *([self.ingress] if self.ingress else [])))
        with self._lock:
            self._handles.clear()

    # --- choosing a replica ----------------------------------------------------

    async def _pick(self, tried: Sequence[str]) -> tuple[str, Any]:
        """A live replica: untried ones first, least loaded first; waits for a restart."""
        deadline = time.monotonic() + self.resolve_timeout
        order = self._order(tried)
        while True:
            for replica in order:
                actor = self._lookup(replica)
                if actor is not None:
                    return replica, actor
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(
                    f"{SERVICE_PREFIX}{self.name}.*", NAMESPACE, self.resolve_timeout
                )
            await asyncio.sleep(POLL_INTERVAL)

    def _order(self, tried: Sequence[str]) -> list[str]:
        with self._lock:
            start = self._turn
            self._turn = (self._turn + 1) % len(self.replicas)
            rotated = self.replicas[start:] + self.replicas[:start]

            def load(replica: str) -> int:
                return self._in_flight[replica]

            # sorted() is stable: equally loaded replicas keep the round-robin order.
            fresh = sorted((r for r in rotated if r not in tried), key=load)
            again = sorted((r for r in rotated if r in tried), key=load)
        return fresh + again  # a tried replica may have been restarted since

    def _lookup(self, replica: str) -> Any | None:
        import ray

        actor = self._handles.get(replica)
        if actor is not None:
            return actor
        try:
            actor = ray.get_actor(replica, namespace=NAMESPACE)
        except ValueError:
            return None  # not registered (restarting, or stopped)
        if actor._actor_id.hex() in self._dead:
            return None  # the name still points at the dead actor
        with self._lock:
            self._handles[replica] = actor
        return actor

    def _forget(self, replica: str, actor: Any) -> None:
        with self._lock:
            self._dead.add(actor._actor_id.hex())
            if self._handles.get(replica) is actor:
                del self._handles[replica]

    def _count(self, replica: str, delta: int) -> None:
        with self._lock:
            self._in_flight[replica] += delta

    async def _dead_letter(
        self, inputs: dict[str, Any], replica: str, cause: str, attempts: int, first: float
    ) -> ReplicaDiedError:
        """Record the request in the dead letters; the error to raise names the entry."""
        import uuid

        from dspex.observability.redact import redact_data as redact
        from dspex.runtime.supervision.application import record_dead_letter
        from dspex.runtime.supervision.dead_letters import DeadLetter

        error = ReplicaDiedError(self.name, replica, attempts, cause, uuid.uuid4().hex[:16])
        entry = DeadLetter.from_exception(
            f"{SERVICE_PREFIX}{self.name}",
            redact(inputs),  # values under credential-like keys never reach the queue
            error,
            attempts=attempts,
            first_failed_at=first,
        )
        await record_dead_letter(dataclasses.replace(entry, id=error.dead_letter_id))
        return error

    # --- versions: rolling updates and rollback -----------------------------------

    @property
    def version(self) -> int:
        """The version the service's replicas are to run (their child specs'; during an
        update some replicas still run the one before: see `versions`)."""
        from dspex.utils.aio import run_sync

        specs = run_sync(self._specs())
        return max(_version_of(spec) for spec in specs)

    def versions(self) -> dict[str, int]:
        """The version each live replica runs now (asked of the replicas)."""
        from dspex.utils.aio import run_sync

        return run_sync(self.aversions())

    async def aversions(self) -> dict[str, int]:
        from ray.exceptions import RayActorError

        found: dict[str, int] = {}
        for replica in self.replicas:
            while replica not in found:
                actor = await self._resolve(replica)
                try:
                    found[replica] = (await actor.stats.remote())["version"]
                except RayActorError:
                    self._forget(replica, actor)  # restarting: ask the next one
        return found

    async def _resolve(self, replica: str) -> Any:
        """The live actor of ``replica``, waiting for a restart."""
        deadline = time.monotonic() + self.resolve_timeout
        while (actor := self._lookup(replica)) is None:
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(replica, NAMESPACE, self.resolve_timeout)
            await asyncio.sleep(POLL_INTERVAL)
        return actor

    def update(
        self, program: Any = None, *, state: dict[str, Any] | None = None, timeout: float = UPDATE_TIMEOUT
    ) -> int:
        """Roll the service onto a new version, replica by replica; returns the new version
        once every replica runs it. See `aupdate`."""
        from dspex.utils.aio import run_sync

        return run_sync(self.aupdate(program, state=state, timeout=timeout))

    async def aupdate(
        self, program: Any = None, *, state: dict[str, Any] | None = None, timeout: float = UPDATE_TIMEOUT
    ) -> int:
        """Roll the service onto ``program`` (or onto learned ``state`` from
        ``compiled.dump_state()``), one replica at a time.

        A new program restarts each replica in turn: the replica stops taking requests
        (handles send new ones to the others), finishes those in flight on the old
        version, and is started from its updated child spec, so a replica that dies at
        any point comes back on the version it should run. The program runs with the
        settings (LM, adapter) the service was started with. ``state`` swaps demos and
        instructions inside the running replicas (no restart). Either way the previous
        version is kept for `rollback`. If a replica cannot start the new version, the
        replicas already updated go back to the old one and ``ServiceUpdateError`` is raised.
        """
        if (program is None) == (state is None):
            raise ValueError("update() takes a new program or state=..., not both nor neither")
        specs = await self._specs()
        version = max(_version_of(spec) for spec in specs) + 1
        if program is not None:
            _check_serve_args(program, self.name, len(self.replicas), self.retries, 1)
            settings = _unpack(specs[0])[1]
            payload = _pack(program, settings)
            new_specs = [_versioned(spec, payload, version) for spec in specs]
            await self._roll(specs, new_specs, timeout)
            await self._refresh_ingress(program)
        else:
            assert state is not None
            new_specs = [_versioned(spec, _with_state(spec, state), version) for spec in specs]
            await self._swap_state(new_specs, state, version, timeout)
        return version

    def rollback(self, *, timeout: float = UPDATE_TIMEOUT) -> int:
        """Go back to the version before the last update (replica by replica, as
        `update`); returns it. Raises ``ServiceUpdateError`` when there is none."""
        from dspex.utils.aio import run_sync

        return run_sync(self.arollback(timeout=timeout))

    async def arollback(self, *, timeout: float = UPDATE_TIMEOUT) -> int:
        specs = await self._specs()
        previous = [spec.kwargs.get("rollback") for spec in specs]
        if any(entry is None for entry in previous):
            raise ServiceUpdateError(self.name, "has no previous version to roll back to")
        new_specs = [
            _versioned(spec, payload, version, keep_rollback=False)
            for spec, (version, payload) in zip(specs, previous, strict=True)  # type: ignore[misc]
        ]
        await self._roll(specs, new_specs, timeout)
        if self.ingress is not None:
            await self._refresh_ingress(_unpack(new_specs[0])[0])
        return max(_version_of(spec) for spec in new_specs)

    async def _refresh_ingress(self, program: Any) -> None:
        """Check HTTP requests against the inputs of the program now served."""
        from ray.exceptions import RayActorError

        if self.ingress is None:
            return
        services = _services_supervisor()
        fields = _pack_fields(program)
        spec = await services.child_spec.remote(self.ingress)
        await services.replace_child.remote(
            dataclasses.replace(spec, kwargs={**spec.kwargs, "fields": fields}), restart=False
        )
        with contextlib.suppress(RayActorError):  # restarting: it starts with the new fields
            await (await self._resolve(self.ingress)).set_fields.remote(fields)

    async def _specs(self) -> list[ChildSpec]:
        services = _services_supervisor()
        try:
            return [await services.child_spec.remote(replica) for replica in self.replicas]
        except ChildNotFoundError:
            raise ServiceUpdateError(self.name, "is not served (stopped?)") from None

    async def _roll(self, old: Sequence[ChildSpec], new: Sequence[ChildSpec], timeout: float) -> None:
        """Restart the replicas one by one on ``new``; on a failed start put the
        ones already done back on ``old``."""
        services = _services_supervisor()
        done: list[ChildSpec] = []
        try:
            for old_spec, new_spec in zip(old, new, strict=True):
                await asyncio.wait_for(services.replace_child.remote(new_spec), timeout)
                done.append(old_spec)
        except Exception as exc:
            for old_spec in reversed(done):
                await services.replace_child.remote(old_spec)
            raise ServiceUpdateError(
                self.name,
                f"update stopped at {new[len(done)].name} and undone: {first_line(str(exc))}",
            ) from exc

    async def _swap_state(
        self, new: Sequence[ChildSpec], state: dict[str, Any], version: int, timeout: float
    ) -> None:
        from ray.exceptions import RayActorError

        services = _services_supervisor()
        for spec in new:
            # the spec first: a replica restarted from now on starts with the new state
            await services.replace_child.remote(spec, restart=False)
            actor = self._lookup(spec.name)
            if actor is None:
                continue  # restarting: it starts from the new spec
            try:
                await asyncio.wait_for(actor.load_state.remote(state, version), timeout)
            except RayActorError:
                continue  # died: its restart starts from the new spec


__all__ = [
    "ModuleActor",
    "RemoteProgramError",
    "ReplicaDiedError",
    "ReplicaDrainingError",
    "ServiceHandle",
    "ServiceUpdateError",
    "get_service",
    "replica_name",
    "serve",
]
