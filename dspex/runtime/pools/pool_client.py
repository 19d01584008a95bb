"""The process-local side of provider pools: routing an `LM`'s requests to its pool.

`enable_pools` installs the `PoolDispatcher` in the LM client's dispatcher seam
(`dspex.clients.dispatch`): ``dspex.init`` does it in the driver, and the
runtime's worker setup hook (`dspex.runtime.worker_setup`) in every Ray worker
of the job. From then on every cache-missed LM request goes to the
`ProviderPool` actor of its (provider, model, api_base) instead of making the
HTTP call in this process. The cache, single-flight and the run budget stay in
front, in the caller's process: a hit never leaves it.

Requests issued in the same event-loop tick (up to `max_batch`) travel in one
actor call, and results come back as they finish (a Ray streaming generator;
a batch of one is a plain call, which is cheaper), each delivered to the
coroutine awaiting it. ``enable_pools(mode="batch")`` returns each batch in
one reply instead: less CPU per call, but every request of a batch waits for
its slowest one (see benchmarks/pool.py). If the pool actor dies, the requests
not yet answered are sent again to the pool re-resolved by name (LM
completions are idempotent, so a repeat is safe). A caller that is cancelled
stops waiting; its request still runs in the pool.

The pool's name derives from non-secret config only, so the same LM pickled
into any worker on any node reaches the same pool. While the dspex runtime runs,
a pool starts as a child of its ``dspex.providers`` supervisor, which restarts
it when it crashes; without the runtime it is a plain detached actor. The API key is read here
(where the LM has it) and sent with each batch as a separate argument.

Importing this module imports neither Ray nor aiohttp (Ray is imported when a
pool is first needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dspex.clients.dispatch import current_dispatcher, install_dispatcher
from dspex.clients.fallback import next_in_line
from dspex.clients.pipeline import priced
from dspex.errors import ConfigurationError, LMTransportError
from dspex.runtime.names import NAMESPACE, PROVIDERS_SUPERVISOR

if TYPE_CHECKING:
    from dspex.clients.lm import LM
    from dspex.clients.retry import RetryPolicy
    from dspex.clients.types import LMResponse, Message
    from dspex.runtime.pools.provider_pool import Outcome, PoolConfig, PoolRequest
    from dspex.runtime.supervision.child_spec import ChildSpec

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 512
# How long a batch keeps resending after its pool died (a restart takes ~0.5-2 s).
RESEND_SECONDS = 30.0
SUPERVISED_START_S = 60.0
Mode = Literal["lease", "stream", "batch"]
MODES: tuple[Mode, ...] = ("lease", "stream", "batch")

T = TypeVar("T")

_mode: Mode = "lease"  # measured best on CPU, latency and throughput (benchmarks/pool.py)
_max_batch = DEFAULT_MAX_BATCH
_handles: dict[str, Any] = {}  # pool name -> actor handle (usable from any thread)
_handles_lock = threading.Lock()
_batchers: dict[tuple[asyncio.AbstractEventLoop, str], _Batcher] = {}
_actor_cls: Any = None
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "dspex_pool_deadline", default=None
)


# --- switching routing on and off ------------------------------------------------


class PoolDispatcher:
    """The LM client's dispatcher while the runtime is up: each request to its pool."""

    async def send(
        self,
        lm: LM,
        messages: Sequence[Message],
        params: dict[str, Any],
        key: str | None,
        *,
        num_retries: int | None = None,
    ) -> LMResponse:
        if _mode == "lease":
            from dspex.primitives.workload import current_workload
            from dspex.runtime.pools.lease_client import send_leased

            return await send_leased(
                lm,
                messages,
                params,
                num_retries=num_retries,
                wait_for_circuit=_waits_for_circuit(current_workload()),
                deadline=_deadline.get(),
            )
        return await route_through_pool(lm, messages, params, key, num_retries=num_retries)

    async def gate(
        self,
        lm: LM,
        attempt_fn: Callable[[], Awaitable[T]],
        *,
        tokens: int,
        policy: RetryPolicy,
    ) -> T:
        """A request other than a chat completion (an embeddings batch, see
        `dspex.clients.embedding`) under ``lm``'s endpoint lease, whatever the mode: the
        caller makes the call, the pool's ledger holds the endpoint's limits for it."""
        from dspex.runtime.pools.lease_client import gated_send

        return await gated_send(lm, attempt_fn, tokens=tokens, policy=policy)

    def __repr__(self) -> str:
        return f"PoolDispatcher(mode={_mode!r}, max_batch={_max_batch})"


def _waits_for_circuit(workload: str) -> bool:
    # Batch work waits for an open circuit's probe, unless the LM has a fallback after
    # it: then the request goes on to the fallback at once (dspex.clients.fallback).
    return workload == "batch" and not next_in_line()


def enable_pools(*, mode: Mode | None = None, max_batch: int | None = None) -> None:
    """Route LM requests of this process through provider pools (Ray must be up).

    ``mode``: "lease" (this process makes the HTTP calls under short leases from the
    pool, which keeps the rate budget, breaker, concurrency cap and usage; see
    `dspex.runtime.pools.lease_client`), "stream" (the pool makes the calls; results
    streamed back as they finish) or "batch" (the pool makes the calls; one reply per
    batch). ``max_batch``: most requests per actor call (stream and batch modes).
    """
    global _mode, _max_batch
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        _mode = mode
    if max_batch is not None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        _max_batch = max_batch
    if not pool_routing_enabled():
        install_dispatcher(PoolDispatcher())


def disable_pools() -> None:
    """LM requests of this process make their HTTP calls in-process again."""
    if pool_routing_enabled():
        install_dispatcher(None)


def routing_mode() -> Mode | None:
    """The pool mode this process routes in, or None when it makes its calls itself."""
    return _mode if pool_routing_enabled() else None


def pool_routing_enabled() -> bool:
    """Whether cache-missed LM requests in this process go to provider pools."""
    return isinstance(current_dispatcher(), PoolDispatcher)


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Pool requests made inside this block are dropped if not sent within ``seconds``."""
    deadline = time.time() + seconds
    outer = _deadline.get()
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


# --- pool identity and start ----------------------------------------------------


@functools.lru_cache(maxsize=1024)  # asked on every routed request
def pool_name(provider: str, model_name: str, api_base: str) -> str:
    """The actor name of an endpoint's pool: readable model, hashed endpoint, no secret."""
    digest = hashlib.sha256(f"{provider}\n{model_name}\n{api_base}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name)[:40]
    return f"dspex.pool.{provider}.{readable}.{digest}"


def pool_config(lm: LM, **overrides: Any) -> PoolConfig:
    """The pool settings for ``lm``'s endpoint: its rpm/tpm/concurrency, plus ``overrides``
    (the breaker's ``failure_rate_threshold``, ``window``, ``window_seconds``,
    ``minimum_calls``, ``fail_max``, ``reset_timeout``, ``count_rate_limits``;
    ``max_circuit_wait``, ``max_concurrency``, ...)."""
    from dspex.runtime.pools.provider_pool import DEFAULT_MAX_CONCURRENCY, PoolConfig

    settings: dict[str, Any] = {
        "provider": lm.provider,
        "model": lm.model,
        "model_name": lm.model_name,
        "api_base": lm.endpoint().api_base,
        "rpm": lm.rpm,
        "tpm": lm.tpm,
        "max_concurrency": lm.max_concurrency or DEFAULT_MAX_CONCURRENCY,
        "lease_max_concurrency": lm.max_concurrency,
        "price": lm.price,
        "transport": lm.transport,
    }
    settings.update(overrides)
    return PoolConfig(**settings)


def pool_spec(lm: LM, **overrides: Any) -> dict[str, Any]:
    """How to start ``lm``'s pool: ``{"name", "namespace", "cls", "args", "kwargs", "options"}``.

    ``options`` are the Ray actor options. The pool is detached (it outlives the
    driver that started it) and never restarted by Ray (``max_restarts=0``):
    restarts belong to the supervisor that owns it.
    """
    from dspex.runtime.pools.provider_pool import ProviderPool

    config = pool_config(lm, **overrides)
    name = pool_name(config.provider, config.model_name, config.api_base)
    return {
        "name": name,
        "namespace": NAMESPACE,
        "cls": ProviderPool,
        "args": (config,),
        "kwargs": {"name": name},
        "options": {
            "name": name,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "get_if_exists": True,
            "max_restarts": 0,
            "num_cpus": 0,  # I/O bound: must not take a CPU slot from evaluation workers
            "max_concurrency": 1000,
        },
    }


def pool_child_spec(lm: LM, **overrides: Any) -> ChildSpec:
    """``pool_spec`` as a child of the runtime's ``dspex.providers`` supervisor:
    the same class, arguments and resources; the supervisor owns the name,
    namespace and restarts (permanent), and the pool lives as long as the tree."""
    from dspex.runtime.supervision.child_spec import RESERVED_ACTOR_OPTIONS, ChildSpec

    spec = pool_spec(lm, **overrides)
    options = {k: v for k, v in spec["options"].items() if k not in RESERVED_ACTOR_OPTIONS}
    return ChildSpec(
        name=spec["name"],
        cls=spec["cls"],
        args=spec["args"],
        kwargs=spec["kwargs"],
        restart="permanent",
        actor_options=options,
    )


def start_pool(lm: LM, **overrides: Any) -> Any:
    """The handle of ``lm``'s pool, creating it if it does not exist yet (blocking).

    While the dspex runtime runs on the cluster the pool starts as a child of
    its ``dspex.providers`` supervisor (restarted when it crashes); otherwise it
    is a plain detached actor. ``overrides`` apply only when this call creates
    the pool: the first start of a name wins, as with any named actor.
    """
    import ray

    if not ray.is_initialized():
        # .remote() would quietly start a private local Ray: say what is wrong instead.
        raise ConfigurationError(
            "provider pools are enabled but Ray is not initialized in this process: "
            "call dspex.init() (or ray.init()) first, or disable_pools()"
        )
    spec = pool_spec(lm, **overrides)
    handle = _start_supervised(lm, spec["name"], overrides)
    with _handles_lock:
        if handle is None:
            handle = _actor_class().options(**spec["options"]).remote(*spec["args"], **spec["kwargs"])
        _handles[spec["name"]] = handle
    return handle


def _start_supervised(lm: LM, name: str, overrides: dict[str, Any]) -> Any | None:
    """The pool's handle, started under ``dspex.providers`` if needed; None without a tree."""
    import ray

    existing = _named(name)
    if existing is not None:
        return existing  # running (supervised or not), or dead and about to be restarted
    providers = _named(PROVIDERS_SUPERVISOR)
    if providers is None:
        return None
    from dspex.runtime.supervision.errors import ChildAlreadyExistsError, ChildStartError

    try:
        ray.get(providers.start_child.remote(pool_child_spec(lm, **overrides)), timeout=SUPERVISED_START_S)
    except ChildAlreadyExistsError:
        pass  # another process added it first, or it is being restarted: wait for its name
    except ChildStartError as exc:
        raise LMTransportError(
            f"provider pool {name} failed to start under {PROVIDERS_SUPERVISOR}: {exc.reason}"
        ) from None
    deadline = time.monotonic() + SUPERVISED_START_S
    while (handle := _named(name)) is None:
        if time.monotonic() >= deadline:
            raise LMTransportError(
                f"provider pool {name} did not start under {PROVIDERS_SUPERVISOR} within "
                f"{SUPERVISED_START_S:g}s; see `dspex status` and the Ray logs"
            )
        time.sleep(0.05)
    return handle


def _named(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:  # no such actor
        return None


def stop_pool(lm: LM) -> None:
    """Stop ``lm``'s pool (in-flight requests fail over to a new one). A pool under
    ``dspex.providers`` is removed from it, so the supervisor does not restart it."""
    import ray

    name = pool_name_of(lm)
    with _handles_lock:
        _handles.pop(name, None)
    if _stop_supervised(name):
        return
    handle = _named(name)
    if handle is not None:
        ray.kill(handle, no_restart=True)


def _stop_supervised(name: str) -> bool:
    import ray

    providers = _named(PROVIDERS_SUPERVISOR)
    if providers is None:
        return False
    children = ray.get(providers.which_children.remote(), timeout=SUPERVISED_START_S)
    if not any(child.name == name for child in children):
        return False
    ray.get(providers.terminate_child.remote(name), timeout=SUPERVISED_START_S)
    ray.get(providers.delete_child.remote(name), timeout=SUPERVISED_START_S)
    return True


def forget_pool_handles() -> None:
    """Drop this process's cached pool handles and leases (the runtime's tree was stopped)."""
    from dspex.runtime.pools.lease_client import forget_leases

    with _handles_lock:
        _handles.clear()
    forget_leases()


def cached_handle(name: str) -> Any | None:
    """This process's handle of the pool named ``name``, if it has one."""
    return _handles.get(name)


def forget_handle(name: str, handle: Any) -> None:
    """Drop ``handle`` (its actor died): the next use re-resolves the name."""
    _forget(name, handle)


def pool_stats(lm: LM, timeout: float = 30.0) -> dict[str, Any]:
    """The stats of ``lm``'s pool (blocking; creates the pool if it does not exist)."""
    import ray

    return ray.get(_handle_for(lm).stats.remote(), timeout=timeout)


def _actor_class() -> Any:
    global _actor_cls
    if _actor_cls is None:
        import ray

        from dspex.runtime.pools.provider_pool import ProviderPool

        _actor_cls = ray.remote(ProviderPool)
    return _actor_cls


def pool_name_of(lm: LM) -> str:
    """The name of ``lm``'s pool (its endpoint's)."""
    return pool_name(lm.provider, lm.model_name, lm.endpoint().api_base)



def _handle_for(lm: LM) -> Any:
    name = pool_name_of(lm)
    handle = _handles.get(name)
    return handle if handle is not None else start_pool(lm)


def _forget(name: str, handle: Any) -> None:
    with _handles_lock:
        if _handles.get(name) is handle:
            del _handles[name]


# --- routing ---------------------------------------------------------------------


async def route_through_pool(
    lm: LM,
    messages: Sequence[Message],
    params: dict[str, Any],
    key: str | None = None,
    *,
    num_retries: int | None = None,
) -> LMResponse:
    """Send one request to ``lm``'s pool and await its response (or its typed error).

    ``key`` (the request's cache key) lets identical in-flight requests from any
    process share one HTTP call; None never shares. ``num_retries`` overrides the
    LM's for the pool's attempts (0 under a run budget: the caller retries, so
    each attempt is reserved before it is sent). Inside batch work
    (`dspex.primitives.workload.batch_work`) the request waits for an open
    circuit's probe, up to the pool's ``max_circuit_wait`` and its deadline;
    otherwise it fails fast with `CircuitOpenError`.
    """
    # Here, not at the top: dspex.primitives imports the LM client, which imports us.
    from dspex.primitives.workload import current_workload
    from dspex.runtime.pools.provider_pool import PoolRequest

    request = PoolRequest(
        messages=list(messages),
        params=params,
        key=key,
        deadline=_deadline.get(),
        timeout=lm.timeout,
        num_retries=lm.num_retries if num_retries is None else num_retries,
        retry_policy=_shippable(lm.retry_policy),
        # Batch work (Evaluate, optimizers) waits for an open circuit; serving fails fast.
        wait_for_circuit=_waits_for_circuit(current_workload()),
    )
    loop = asyncio.get_running_loop()
    name = pool_name_of(lm)
    batcher = _batchers.get((loop, name))
    if batcher is None:
        batcher = _batcher_for(loop, name, lm)
    outcome = await batcher.submit(request, lm.credential())
    if isinstance(outcome, BaseException):
        raise outcome
    # Cost by this LM's price, exactly as an in-process call would report it.
    return priced(outcome, lm.resolved_price)


def _shippable(policy: RetryPolicy) -> RetryPolicy:
    # The LM's backoff schedule travels; a sleep or random source bound to this
    # process (a test's) does not.
    if policy.sleep is None and policy.rand is None:
        return policy
    return dataclasses.replace(policy, sleep=None, rand=None)


def _batcher_for(loop: asyncio.AbstractEventLoop, name: str, lm: LM) -> _Batcher:
    for stale in [k for k in list(_batchers) if k[0].is_closed()]:
        _batchers.pop(stale, None)  # other threads' loops may be doing the same
    batcher = _batchers[(loop, name)] = _Batcher(loop, name, lm)
    return batcher


class _Batcher:
    """Collects one loop's requests for one pool and ships them a tick at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, lm: LM) -> None:
        self._loop = loop
        self._name = name
        self._lm = lm  # to (re)start the pool; holds no key (keys live in LM's registry)
        # Grouped by API key: one batch carries one key. Held only until the tick ends.
        self._pending: dict[str | None, list[tuple[PoolRequest, asyncio.Future[Outcome]]]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, request: PoolRequest, api_key: str | None) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = self._loop.create_future()
        group = self._pending.setdefault(api_key, [])
        group.append((request, future))
        if len(group) >= _max_batch:
            self._ship(api_key, self._pending.pop(api_key))
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            # call_soon runs after every task already ready in this tick has run, so
            # an asyncio.gather of N calls becomes one batch.
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for api_key, group in pending.items():
            self._ship(api_key, group)

    def _ship(
        self, api_key: str | None, group: list[tuple[PoolRequest, asyncio.Future[Outcome]]]
    ) -> None:
        task = self._loop.create_task(self._send(api_key, group))
        self._tasks.add(task)  # a strong reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, api_key: str | None, group: list[tuple[PoolRequest, asyncio.Future[Outcome]]]
    ) -> None:
        from ray.exceptions import RayActorError

        waiting = group
        give_up_at = time.monotonic() + RESEND_SECONDS
        attempt = 0
        while True:
            handle = None
            try:
                handle = await self._handle()
                await self._exchange(handle, api_key, waiting)
                return
            except RayActorError as error:
                # The pool died mid-batch: the answered requests are delivered; the
                # rest go to the pool re-resolved by name.
                if handle is not None:
                    _forget(self._name, handle)
                waiting = [(r, f) for r, f in waiting if not f.done()]
                if not waiting:
                    return
                if time.monotonic() >= give_up_at:
                    _fail_all(waiting, self._gave_up(error))
                    return
                logger.warning(
                    "dspex: provider pool %s unavailable (%s); resending %d requests",
                    self._name,
                    type(error).__name__,
                    len(waiting),
                )
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))  # let a restart land
                attempt += 1
            except BaseException as error:
                # Anything else (Ray down, a bug) fails these requests; none may hang.
                _fail_all(waiting, error)
                if not isinstance(error, Exception):
                    raise
                return

    def _gave_up(self, error: BaseException) -> LMTransportError:
        return LMTransportError(
            f"provider pool {self._name} stayed unavailable for {RESEND_SECONDS:g}s "
            f"({type(error).__name__}); check the Ray logs of the pool actor"
        )

    async def _exchange(
        self,
        handle: Any,
        api_key: str | None,
        group: list[tuple[PoolRequest, asyncio.Future[Outcome]]],
    ) -> None:
        requests = [request for request, _ in group]
        if _mode == "batch" or len(requests) == 1:
            # One request gains nothing from streaming, and a plain reply is cheaper.
            outcomes = await handle.complete_all.remote(requests, api_key)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                _deliver(future, outcome)
            return
        stream = handle.complete_batch.options(num_returns="streaming").remote(requests, api_key)
        async for ref in stream:
            for index, outcome in await ref:
                _deliver(group[index][1], outcome)

    async def _handle(self) -> Any:
        handle = _handles.get(self._name)
        if handle is not None:
            return handle
        # Resolving or creating a named actor is a blocking GCS round trip.
        return await asyncio.to_thread(start_pool, self._lm)


def _deliver(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(outcome)


def _fail_all(
    group: list[tuple[PoolRequest, asyncio.Future[Outcome]]], error: BaseException
) -> None:
    for _, future in group:
        if not future.done():
            future.set_result(error)


__all__ = [
    "NAMESPACE",
    "PoolDispatcher",
    "disable_pools",
    "enable_pools",
    "forget_pool_handles",
    "pool_child_spec",
    "pool_config",
    "pool_name",
    "pool_name_of",
    "pool_routing_enabled",
    "pool_spec",
    "pool_stats",
    "routing_mode",
    "request_deadline",
    "route_through_pool",
    "start_pool",
    "stop_pool",
]
