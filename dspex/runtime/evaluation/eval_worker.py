"""`EvalWorker`: runs chunks of an evaluation's examples, concurrently, in one process.

A plain class with async methods: a unit test instantiates it directly, the Ray
runner starts it as an actor (`dspex.runtime.evaluation.ray_runner`). One worker serves
many evaluations over its life, because an actor costs about 0.5 s and 48 MB to
start. Each evaluation ships its program, metric and settings once, as pickled
bytes keyed by their content hash (`RunSpec`); the worker unpickles them on
the first chunk it sees and keeps the last few, so a program evaluated again
(an optimizer's candidate, a rerun) is not shipped or unpickled again.

`EvalWorkerPool` keeps the actors (one pool per Ray session by default,
`default_pool()`); Ray is imported only when a pool is used.

Under a run budget the driver sends each chunk with a lease (`LeaseGrant`): a
block of the run's LM calls and cost carved out of its `CallBudget`. The chunk's
LM requests reserve from that lease locally (no round trip per call) and the
chunk's answer says what it spent, so the driver takes the rest back. An
example whose request the lease cannot cover is answered as budget-stopped
(``ExampleError.budget``, with the claim it needed): not a failure of the
program, the driver runs it again once budget is free or stops the evaluation.

Rows are plain data the driver can always unpickle: a failed example's
exception becomes an `ExampleError` (type, message, traceback), because many
exception classes (keyword-only constructors) cannot be rebuilt by pickle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import traceback as tb
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.clients.budget import BudgetLease, Claim, LeaseGrant, budget_scope
from dspex.clients.types import Usage
from dspex.errors import BudgetExceededError
from dspex.evaluate.runner import MetricCaller, ProgramCaller, evaluate_example, failure_stage
from dspex.primitives.settings import context

__all__ = [
    "ChunkRow",
    "EvalWorker",
    "EvalWorkerPool",
    "ExampleError",
    "LeasedChunk",
    "RunSpec",
    "SHIPPED_SETTINGS",
    "alive_nodes",
    "default_pool",
    "pack_payload",
    "shutdown_pool",
]

logger = logging.getLogger("dspex.evaluate")

# Settings a program reads while it runs; the rest are per call (trace,
# caller_modules) or belong to the driver process (num_threads, max_errors).
SHIPPED_SETTINGS = (
    "lm",
    "adapter",
    "max_trace_size",
    "callbacks",
    "disable_history",
    "max_history_size",
    "rollout_id",
    "rm",  # the retriever dspex.Retrieve searches
    "redactors",  # dspex.privacy: requests are redacted where they are made, on the worker
)


@dataclass(frozen=True)
class ExampleError:
    """Why one example failed on a worker, as plain strings."""

    error_type: str
    message: str
    traceback: str | None = None
    budget: bool = False
    """The example's LM request did not fit in the run's budget (`BudgetExceededError`)."""
    needed: Claim | None = None
    """The claim of the request that was refused, when the budget said."""
    stage: str = ""
    """Where it failed (inputs, program, lm, metric: `failure_stage`), "" if unknown."""


ChunkRow = tuple[int, bool, float, Any, "Usage | None"]
"""``(index, ok, score, prediction or ExampleError, usage)`` for one example."""


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to run one evaluation's chunks."""

    run_id: str
    payload_key: str
    """Content hash of the payload: workers cache unpickled payloads by it."""
    payload: Any
    """The pickled ``(program, metric, settings)``: bytes, or a Ray ObjectRef to them.
    Nested in this dataclass, a ref reaches the worker unresolved, so a worker
    that already holds the payload never fetches it again."""
    concurrency: int
    """Examples of this run in flight at once on one worker."""
    failure_score: float = 0.0
    provide_traceback: bool = False
    pool_mode: str | None = None
    """The driver routes its LM requests through provider pools in this mode: so do this
    run's examples here (a worker started without dspex's setup hook, e.g. after
    ``ray.init()`` then ``dspex.init()``, would otherwise call the LM itself)."""


@dataclass(frozen=True)
class LeasedChunk:
    """A chunk's rows and what its lease spent (the driver takes back the rest)."""

    rows: list[ChunkRow]
    spent: Claim


def pack_payload(program: Any, metric: Any, settings: dict[str, Any]) -> tuple[str, bytes]:
    """Pickle what every chunk needs; returns ``(content hash, bytes)``."""
    blob = _cloudpickle().dumps((program, metric, settings))
    return hashlib.sha256(blob).hexdigest(), blob


def _cloudpickle() -> Any:
    # Ray's own copy, not the cloudpickle package: a module registered with
    # ray.cloudpickle.register_pickle_by_value (code the workers cannot
    # import: a notebook, a test module) then ships by value here as it does
    # everywhere else in Ray.
    from ray import cloudpickle

    return cloudpickle


@dataclass
class _Loaded:
    program: Any
    metric: Any
    settings: dict[str, Any]


@dataclass
class _RunState:
    """One evaluation on this worker: its callers and its concurrency bound."""

    program: ProgramCaller
    metric: MetricCaller
    settings: dict[str, Any]
    slots: asyncio.Semaphore
    spec: RunSpec
    chunks: set[asyncio.Task[Any]] = field(default_factory=set)
    unreported: dict[int, Claim] = field(default_factory=dict)
    """What leased chunks that never answered (cancelled) spent, for `lease_spent`."""


class EvalWorker:
    """Evaluates chunks of examples; asyncio concurrency inside, bounded per run."""

    def __init__(self, *, max_payloads: int = 4, max_runs: int = 16) -> None:
        self._max_payloads = max_payloads
        self._max_runs = max_runs
        self._payloads: OrderedDict[str, asyncio.Future[_Loaded]] = OrderedDict()
        self._runs: OrderedDict[str, _RunState] = OrderedDict()

    async def run_chunk(
        self, spec: RunSpec, chunk_id: int, items: Sequence[tuple[int, Any]]
    ) -> list[ChunkRow]:
        """Run each ``(index, example)``; one row per item, in the items' order."""
        del chunk_id  # the driver's bookkeeping; named in the call for Ray's task listings
        state = await self._run_state(spec)
        rows = asyncio.gather(*(self._one(state, index, example) for index, example in items))
        state.chunks.add(rows)
        try:
            return list(await rows)
        finally:
            state.chunks.discard(rows)

    async def run_leased_chunk(
        self, spec: RunSpec, chunk_id: int, items: Sequence[tuple[int, Any]], grant: LeaseGrant
    ) -> LeasedChunk:
        """`run_chunk` with the LM requests reserving from a lease of the run's budget."""
        state = await self._run_state(spec)
        lease = BudgetLease(grant)
        rows = asyncio.gather(*(self._one(state, index, example, lease) for index, example in items))
        state.chunks.add(rows)
        answered = False
        try:
            result = LeasedChunk(list(await rows), lease.spent())
            answered = True
            return result
        finally:
            state.chunks.discard(rows)
            if not answered:
                # Cancelled (or failed): the driver asks what was spent with `lease_spent`.
                state.unreported[chunk_id] = lease.spent()

    async def lease_spent(self, run_id: str, chunk_ids: Sequence[int]) -> dict[int, Claim]:
        """What the leases of chunks that never answered spent (a chunk not known here
        is left out: the driver then counts its whole lease as spent)."""
        state = self._runs.get(run_id)
        if state is None:
            return {}
        return {c: state.unreported.pop(c) for c in chunk_ids if c in state.unreported}

    async def end_run(self, run_id: str) -> None:
        """Drop a finished evaluation's state (its thread pool, its bound)."""
        state = self._runs.pop(run_id, None)
        if state is not None:
            self._close(state)

    async def ping(self) -> str:
        """Returns once the actor is up: its node id, when running under Ray."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id()
        except Exception:  # not in a Ray worker (a unit test)
            return ""

    # --- internals ----------------------------------------------------------

    async def _one(
        self, state: _RunState, index: int, example: Any, lease: BudgetLease | None = None
    ) -> ChunkRow:
        async with state.slots:
            try:
                with context(**state.settings), budget_scope(lease):
                    prediction, score = await evaluate_example(state.program, state.metric, example)
            except BudgetExceededError as exc:
                error = self._error(exc, state.spec, budget=True)
                needed = exc.needed if isinstance(exc.needed, Claim) else None
                return (index, False, 0.0, dataclasses.replace(error, needed=needed), None)
            except Exception as exc:
                error = self._error(exc, state.spec)
                return (index, False, state.spec.failure_score, error, None)
        usage = getattr(prediction, "usage", None)
        return (index, True, score, prediction, usage if isinstance(usage, Usage) else None)

    @staticmethod
    def _error(exc: BaseException, spec: RunSpec, *, budget: bool = False) -> ExampleError:
        trace = "".join(tb.format_exception(exc)) if spec.provide_traceback else None
        return ExampleError(type(exc).__name__, str(exc), trace, budget, stage=failure_stage(exc))

    async def _run_state(self, spec: RunSpec) -> _RunState:
        state = self._runs.get(spec.run_id)
        if state is not None:
            self._runs.move_to_end(spec.run_id)
            return state
        if spec.pool_mode is not None:
            from dspex.runtime.pools.pool_client import enable_pools

            enable_pools(mode=spec.pool_mode)  # type: ignore[arg-type]  # as the driver does
        loaded = await self._load(spec)
        state = self._runs.get(spec.run_id)  # another chunk may have won the race
        if state is None:
            state = _RunState(
                program=ProgramCaller(loaded.program, spec.concurrency),
                metric=MetricCaller(loaded.metric),
                settings=loaded.settings,
                slots=asyncio.Semaphore(spec.concurrency),
                spec=spec,
            )
            self._runs[spec.run_id] = state
            self._evict_runs()
        return state

    def _evict_runs(self) -> None:
        # A driver that died never sends end_run: keep only the most recent
        # runs, skipping any that still have chunks running.
        for run_id in list(self._runs):
            if len(self._runs) <= self._max_runs:
                return
            if not self._runs[run_id].chunks:
                self._close(self._runs.pop(run_id))

    @staticmethod
    def _close(state: _RunState) -> None:
        state.program.close()

    async def _load(self, spec: RunSpec) -> _Loaded:
        future = self._payloads.get(spec.payload_key)
        if future is None:
            # One future per payload: concurrent first chunks share one fetch.
            future = asyncio.ensure_future(_unpack(spec.payload))
            self._payloads[spec.payload_key] = future
            while len(self._payloads) > self._max_payloads:
                self._payloads.popitem(last=False)
        else:
            self._payloads.move_to_end(spec.payload_key)
        try:
            return await asyncio.shield(future)
        except Exception:
            # A failed load is not cached: the next chunk tries again.
            if self._payloads.get(spec.payload_key) is future:
                del self._payloads[spec.payload_key]
            raise


async def _unpack(payload: Any) -> _Loaded:
    blob = payload if isinstance(payload, bytes) else await payload
    program, metric, settings = _cloudpickle().loads(blob)
    return _Loaded(program, metric, settings)


# --- the pool of worker actors ------------------------------------------------


_REMOTE_CLASS: Any = None


def _remote_class() -> Any:
    global _REMOTE_CLASS
    if _REMOTE_CLASS is None:
        import ray

        _REMOTE_CLASS = ray.remote(EvalWorker)
    return _REMOTE_CLASS


def _session_key() -> tuple[str, str]:
    """Identifies this driver's Ray connection: handles from an earlier one are void."""
    import ray

    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


def alive_nodes() -> int:
    """How many nodes of the cluster are alive."""
    import ray

    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


class EvalWorkerPool:
    """Long-lived `EvalWorker` actors, spread over the cluster's nodes.

    Workers take no CPU reservation (they wait on I/O), so they never starve
    other actors of scheduling slots; SPREAD puts them on different nodes.
    """

    def __init__(self, *, actor_options: dict[str, Any] | None = None) -> None:
        self.actor_options: dict[str, Any] = {
            "num_cpus": 0,
            "scheduling_strategy": "SPREAD",
            **(actor_options or {}),
        }
        self._workers: list[Any] = []
        # dead actor id -> its replacement, so concurrent runs that both see a
        # worker die start one replacement, not one each.
        self._replaced: dict[str, Any] = {}
        self.session = _session_key()

    @property
    def workers(self) -> list[Any]:
        return list(self._workers)

    def add(self, **actor_options: Any) -> Any:
        """Start one more worker; options override the pool's (e.g. to pin it to a node)."""
        handle = _remote_class().options(**{**self.actor_options, **actor_options}).remote()
        self._workers.append(handle)
        return handle

    def ensure(self, count: int) -> list[Any]:
        """The first `count` workers, starting the missing ones."""
        while len(self._workers) < count:
            self.add()
        return self._workers[:count]

    def replace(self, dead: Any) -> tuple[Any, bool]:
        """The replacement of a dead worker, started if needed; ``(handle, started)``."""
        key = dead._actor_id.hex()
        known = self._replaced.get(key)
        if known is not None:
            return known, False
        _kill(dead)
        fresh = _remote_class().options(**self.actor_options).remote()
        self._replaced[key] = fresh
        self._workers = [fresh if w is dead else w for w in self._workers]
        if fresh not in self._workers:
            self._workers.append(fresh)
        return fresh, True

    def shutdown(self) -> None:
        """Kill every worker; the pool can be used again (it starts new ones)."""
        for handle in self._workers:
            _kill(handle)
        self._workers = []
        self._replaced.clear()


def _kill(handle: Any) -> None:
    import ray

    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # already dead, or its node is gone: nothing to stop
        logger.debug("eval worker already gone", exc_info=True)


_POOL: EvalWorkerPool | None = None


def default_pool() -> EvalWorkerPool:
    """This driver's shared pool, rebuilt after Ray was restarted or reconnected."""
    global _POOL
    if _POOL is None or _POOL.session != _session_key():
        _POOL = EvalWorkerPool()
    return _POOL


def shutdown_pool() -> None:
    """Stop the default pool's workers (they also stop when the driver exits)."""
    global _POOL
    if _POOL is not None:
        import ray

        if ray.is_initialized() and _POOL.session == _session_key():
            _POOL.shutdown()
        _POOL = None
