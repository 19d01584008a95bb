"""The Ray runner: an evaluation fanned out to `EvalWorker` actors across nodes.

`run_ray` has `run_local`'s contract and result. A driver-side asyncio
dispatcher reads the devset lazily in small chunks and hands a chunk to a
worker only when that worker has room (a few chunks each), so a 100k devset is
never turned into object refs at once and memory stays the in-flight work plus
the results. Workers run a chunk's examples concurrently on asyncio.

Exactly-once accounting: every example ends as one score or one recorded
failure. A chunk whose worker died (killed, crashed, node removed) goes back to
the queue and the worker is replaced; a result for an index already settled is
ignored; an example whose worker died `max_attempts` times is recorded as a
`WorkerLostError` failure (retried alone after its second loss, so one example
that kills its process cannot take its chunk-mates down with it).

Budgets: under a run's ``max_lm_calls=``/``max_cost=`` (an active `CallBudget`)
each chunk goes out with a lease carved from the budget (`_Leases`), which the
worker's LM requests reserve from before they are sent; the answer says what
the lease spent and the rest goes back. Leases come out of what is free, so the
requests that reach the LM never exceed the budget, on any number of workers
and nodes. An example a lease could not cover is run again once budget is free
(chunks in flight give back what they did not use); when nothing is in flight
and the free budget cannot cover the smallest request refused, the evaluation
stops with `BudgetExceededError`. A lost chunk's lease counts as spent whole:
its requests may have reached the LM.

Workers live in an `EvalWorkerPool` reused across evaluations (by default one
per Ray session, `default_pool()`); each evaluation ships its program, metric
and settings once through the object store (see `dspex.runtime.evaluation.eval_worker`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dspex.clients.budget import Budget, Claim, LeaseGrant, active_budget
from dspex.clients.lease_planner import LeasePlanner
from dspex.clients.types import Usage
from dspex.errors import (
    BudgetExceededError,
    ConfigurationError,
    RemoteExampleError,
    WorkerLostError,
)
from dspex.evaluate.progress import NullProgress, Progress
from dspex.evaluate.runner import (
    EvaluationFailure,
    Row,
    RunOptions,
    RunOutcome,
    too_many_errors,
)
from dspex.evaluate.runners import Runner, register_runner
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.runtime.evaluation.eval_worker import (
    SHIPPED_SETTINGS,
    ChunkRow,
    EvalWorkerPool,
    ExampleError,
    LeasedChunk,
    RunSpec,
    alive_nodes,
    default_pool,
    pack_payload,
    shutdown_pool,
)
from dspex.runtime.pools.pool_client import routing_mode

__all__ = [
    "DispatchStats",
    "EvalWorkerPool",
    "RemoteExampleError",
    "RunPlan",
    "WorkerLostError",
    "default_pool",
    "plan",
    "run_ray",
    "shutdown_pool",
]

logger = logging.getLogger("dspex.evaluate")

MAX_CHUNK = 32
"""Default chunk size cap: small chunks balance load and lose little on a death."""
WORKERS_PER_NODE = 1
"""Default workers per alive node: one process per node, asyncio inside."""
CANCEL_GRACE_S = 10.0
"""How long a stopped run waits for its cancelled chunks to unwind."""


@dataclass
class DispatchStats:
    """What the dispatcher did; pass one to `run_ray` to have it filled in."""

    workers: int = 0
    chunk_size: int = 0
    per_worker_concurrency: int = 0
    max_outstanding_per_worker: int = 0
    """The cap on chunks sent to one worker and not yet returned."""
    max_outstanding: int = 0
    """The most chunks outstanding at once over the whole run."""
    chunks_sent: int = 0
    chunks_lost: int = 0
    """Chunks whose worker died before returning them (each was re-dispatched)."""
    workers_replaced: int = 0
    duplicates_ignored: int = 0


# --- the dispatcher --------------------------------------------------------------


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (or its node) is gone, not that the code failed."""
    from ray import exceptions as rex

    return (
        rex.RayActorError,
        rex.NodeDiedError,
        rex.WorkerCrashedError,
        rex.ObjectLostError,
        rex.OutOfMemoryError,
        rex.LocalRayletDiedError,
    )


@dataclass
class _Chunk:
    id: int
    items: list[tuple[int, Any]]
    suspect: bool = False
    """A single example whose worker died twice while running it: it may be what
    kills workers, so suspects run one at a time (see `_Dispatch._lost`)."""


@dataclass
class _Slot:
    """One worker position in a run; its handle changes when the worker is replaced."""

    handle: Any
    outstanding: int = 0
    retired: bool = False


@dataclass
class _Sent:
    chunk: _Chunk
    slot: _Slot
    handle: Any
    ref: Any
    grant: LeaseGrant | None = None
    """The lease of the run's budget this chunk spends from, if the run has a budget."""


@dataclass(frozen=True)
class RunPlan:
    """How a run is split: workers, each one's concurrency, chunk size, chunk cap."""

    workers: int
    chunk_size: int
    concurrency: int
    """Examples in flight at once on one worker."""
    cap: int
    """Chunks sent to one worker and not yet returned, at most."""


def plan(options: RunOptions, workers: int, chunk_size: int | None) -> RunPlan:
    """Per-worker concurrency, chunk size and outstanding-chunk cap for a run.

    Each worker gets an equal share of ``num_threads``. Its cap keeps that many
    examples queued plus one chunk more, so it never idles waiting on a round
    trip while the driver holds no more than that.
    """
    workers = max(1, min(workers, options.num_threads))
    concurrency = math.ceil(options.num_threads / workers)
    size = chunk_size or max(1, min(MAX_CHUNK, math.ceil(concurrency / 2)))
    cap = math.ceil(concurrency / size) + 1
    return RunPlan(workers, size, concurrency, cap)


class _Dispatch:
    """One evaluation across workers: the chunk queue, results by index, failures."""

    def __init__(
        self,
        pool: EvalWorkerPool,
        spec: RunSpec,
        run_plan: RunPlan,
        options: RunOptions,
        progress: Progress,
        stats: DispatchStats,
        max_attempts: int,
        calls_per_example: int = 1,
    ) -> None:
        self.pool = pool
        self.spec = spec
        self.plan = run_plan
        self.options = options
        self.progress = progress
        self.stats = stats
        self.max_attempts = max_attempts
        self.slots = [_Slot(handle) for handle in pool.ensure(run_plan.workers)]
        self.replacements_left = 2 * run_plan.workers + 4
        self.rows: list[Row | None] = []
        self.failures: list[EvaluationFailure] = []
        self.exceptions: list[tuple[Any, BaseException]] = []
        self.usage: Usage | None = None
        self.deaths: dict[int, int] = {}
        """index -> how many times a worker died while running it."""
        self.retry: deque[_Chunk] = deque()
        self.suspects: deque[_Chunk] = deque()
        self.suspect_out = False
        self.sent: dict[asyncio.Future[Any], _Sent] = {}
        self.next_chunk_id = 0
        self.stopped = False
        self.aborted: BaseException | None = None
        self.recorded = 0
        self.source_done = False
        # Under a run budget every chunk spends from a lease of it (see the module doc).
        self.budget: Budget | None = active_budget()
        self.leases = (
            None
            if self.budget is None
            else LeasePlanner(
                self.budget,
                slots=run_plan.workers * run_plan.cap,
                calls_per_example=calls_per_example,
            )
        )
        self.budget_blocked = False
        """A chunk is waiting for budget that no lease could give."""
        self.budget_stopped = 0
        """Examples the budget stopped (each ran again, or was left when the budget ran out)."""

    # --- the loop ---------------------------------------------------------------

    async def run(self, devset: Iterable[Any]) -> None:
        source: Iterator[_Chunk] | None = self._read(iter(devset))
        try:
            while not self.stopped:
                source = self._fill(source)
                if not self.sent:
                    if self.budget_blocked:
                        self._out_of_budget(source)
                    return
                done, _ = await asyncio.wait(self.sent, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    self._settle(future)
        finally:
            await self._cancel_outstanding()
            self._end_run()

    def _read(self, examples: Iterator[Any]) -> Iterator[_Chunk]:
        # Indices are given as examples are read, so results keep devset order.
        while True:
            items: list[tuple[int, Any]] = []
            for example in examples:
                items.append((len(self.rows), example))
                self.rows.append(None)
                if len(items) == self.plan.chunk_size:
                    break
            if not items:
                return
            yield self._chunk(items)

    def _chunk(self, items: list[tuple[int, Any]]) -> _Chunk:
        self.next_chunk_id += 1
        return _Chunk(self.next_chunk_id, items)

    def _fill(self, source: Iterator[_Chunk] | None) -> Iterator[_Chunk] | None:
        """Send chunks to workers with room: retries, then a suspect, then new ones.
        Returns the source, or None once it is exhausted."""
        while not self.stopped:
            slot = self._roomiest()
            if slot is None:
                break
            if self.retry:
                chunk = self.retry.popleft()
            elif self.suspects and not self.suspect_out:
                chunk = self.suspects.popleft()
                self.suspect_out = True
            elif source is not None:
                chunk = next(source, None)
                if chunk is None:
                    source = None
                    self.source_done = True
                    continue
            else:
                break
            grant = None
            if self.leases is not None:
                grant = self.leases.lease(len(chunk.items))
                if grant is None:
                    # Wait for budget: chunks in flight give back what they do not use.
                    self.budget_blocked = True
                    self.retry.appendleft(chunk)
                    break
                self.budget_blocked = False
            self._send(chunk, slot, grant)
        return source

    def _roomiest(self) -> _Slot | None:
        live = [s for s in self.slots if not s.retired and s.outstanding < self.plan.cap]
        return min(live, key=lambda s: s.outstanding, default=None)

    def _send(self, chunk: _Chunk, slot: _Slot, grant: LeaseGrant | None = None) -> None:
        if grant is None:
            ref = slot.handle.run_chunk.remote(self.spec, chunk.id, chunk.items)
        else:
            ref = slot.handle.run_leased_chunk.remote(self.spec, chunk.id, chunk.items, grant)
        future = asyncio.wrap_future(ref.future())
        self.sent[future] = _Sent(chunk, slot, slot.handle, ref, grant)
        slot.outstanding += 1
        self.stats.chunks_sent += 1
        self.stats.max_outstanding = max(self.stats.max_outstanding, len(self.sent))

    # --- results ----------------------------------------------------------------

    def _settle(self, future: asyncio.Future[Any]) -> None:
        # Popping drops the driver's last reference to the ref: the object store
        # frees the chunk's result as soon as it is read.
        sent = self.sent.pop(future)
        sent.slot.outstanding -= 1
        if sent.chunk.suspect:
            self.suspect_out = False
        try:
            answer: list[ChunkRow] | LeasedChunk = future.result()
        except _lost_errors() as exc:
            self._lease_lost(sent)
            self._lost(sent, exc)
        except Exception as exc:
            # run_chunk itself raised (the payload failed to load, say): the
            # chunk's examples cannot run anywhere, so each is a failure.
            self._lease_lost(sent)
            cause = getattr(exc, "cause", None) or exc
            error = ExampleError(type(cause).__name__, str(cause))
            for index, example in sent.chunk.items:
                self._fail(index, example, error)
        else:
            rows = answer.rows if isinstance(answer, LeasedChunk) else answer
            if isinstance(answer, LeasedChunk) and sent.grant is not None:
                self._lease_returned(sent, answer)
            examples = dict(sent.chunk.items)
            for row in rows:
                # Keyed by the row's own index: the ledger, not the order, decides.
                self._record(row[0], examples[row[0]], row)
            self._run_again(sent.chunk, rows)

    # --- the budget -------------------------------------------------------------

    def _lease_returned(self, sent: _Sent, answer: LeasedChunk) -> None:
        assert self.leases is not None and sent.grant is not None
        refused = [_needed(row) for row in answer.rows if _budget_stopped(row)]
        done = len(answer.rows) - len(refused)
        self.leases.returned(sent.grant, answer.spent, examples_done=done, refused=refused)

    def _lease_lost(self, sent: _Sent, spent: Claim | None = None) -> None:
        if self.leases is not None and sent.grant is not None:
            self.leases.lost(sent.grant, spent)
            sent.grant = None

    def _run_again(self, chunk: _Chunk, rows: list[ChunkRow]) -> None:
        """Examples the budget stopped are not failures: they run again when budget frees up."""
        stopped = {row[0] for row in rows if _budget_stopped(row)}
        again = [(i, e) for i, e in chunk.items if i in stopped and self.rows[i] is None]
        if again and not self.stopped:
            self.budget_stopped += len(again)
            self.retry.append(self._chunk(again))

    def _out_of_budget(self, source: Iterator[_Chunk] | None) -> None:
        """Nothing in flight and no lease to be had: the budget is spent."""
        waiting = sum(len(chunk.items) for chunk in self.retry)
        if source is not None and not self.source_done:
            waiting_note = f"{waiting} examples (and those not read yet) were not run"
        else:
            waiting_note = f"{waiting} examples were not run"
        budget = self.budget
        assert budget is not None
        self.aborted = BudgetExceededError(
            f"the run's LM budget ran out during an evaluation on the EvalWorkers "
            f"({budget.calls} calls, ${budget.cost:.4f} spent; {waiting_note}); "
            "raise max_lm_calls=/max_cost= to let it go further"
        )
        self.stopped = True

    def _record(self, index: int, example: Any, row: ChunkRow) -> None:
        if self.rows[index] is not None or self.stopped:
            self.stats.duplicates_ignored += self.rows[index] is not None
            return
        _, ok, score, value, usage = row
        if ok:
            self._succeed(index, example, value, score, usage)
        elif _budget_stopped(row):
            if self.leases is None:
                # No lease was given, yet a budget stopped it (the program set its
                # own): the evaluation stops as an in-process one would, scoring nothing.
                if self.aborted is None:
                    self.aborted = BudgetExceededError(value.message)
                self.stopped = True
            # Under a lease: not the example's fault; `_run_again` queues it.
        else:
            self._fail(index, example, value)

    def _succeed(
        self, index: int, example: Any, prediction: Any, score: float, usage: Usage | None
    ) -> None:
        self.rows[index] = (example, prediction, score)
        self.recorded += 1
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage + usage
        self.progress.advance(score, usage, False)

    def _fail(self, index: int, example: Any, error: ExampleError) -> None:
        if self.rows[index] is not None or self.stopped:
            return
        options = self.options
        failure = EvaluationFailure(
            index, example, error.error_type, error.message, error.traceback, error.stage
        )
        logger.warning("evaluation example %s", failure.describe())
        if error.traceback:
            logger.warning("%s", error.traceback)
        self.rows[index] = (example, Prediction(), options.failure_score)
        self.recorded += 1
        self.failures.append(failure)
        limit = options.max_errors
        if limit is not None:
            self.exceptions.append((example, RemoteExampleError(error.error_type, error.message, error.traceback)))
        self.progress.advance(options.failure_score, None, True)
        if limit is not None and len(self.failures) > limit:
            self.stopped = True

    # --- lost workers -----------------------------------------------------------

    def _lost(self, sent: _Sent, exc: BaseException) -> None:
        self.stats.chunks_lost += 1
        reason = _first_line(exc)
        logger.warning("an evaluation worker was lost (%s); re-dispatching its chunk", reason)
        if sent.slot.handle is sent.handle:
            self._replace(sent.slot)
        again: list[tuple[int, Any]] = []
        for index, example in sent.chunk.items:
            if self.rows[index] is not None:
                continue
            deaths = self.deaths.get(index, 0) + 1
            self.deaths[index] = deaths
            if deaths >= self.max_attempts:
                message = (
                    f"the evaluation worker running this example died {deaths} times "
                    f"(last: {reason})"
                )
                self._fail(index, example, ExampleError("WorkerLostError", message))
            elif deaths == 1:
                again.append((index, example))
            else:
                # Lost twice: it may be what kills workers (a crash, out of
                # memory), so it runs alone, one suspect at a time, and cannot
                # take other examples' attempts with it.
                suspect = self._chunk([(index, example)])
                suspect.suspect = True
                self.suspects.append(suspect)
        if again:
            self.retry.appendleft(self._chunk(again))
        if all(s.retired for s in self.slots):
            self._no_workers_left(reason)

    def _replace(self, slot: _Slot) -> None:
        if self.replacements_left <= 0:
            slot.retired = True
            return
        handle, started = self.pool.replace(slot.handle)
        slot.handle = handle
        if started:
            self.replacements_left -= 1
            self.stats.workers_replaced += 1

    def _no_workers_left(self, reason: str) -> None:
        # Every replacement died too: the run cannot finish, so it stops loudly
        # rather than returning a partial result or starting workers forever.
        if self.aborted is None:
            self.aborted = WorkerLostError(
                f"evaluation stopped: every evaluation worker died and "
                f"{2 * self.plan.workers + 4} replacements died too (last: {reason}). "
                "Check the workers' logs (ray logs) for why they die, e.g. out of memory."
            )
        self.stopped = True

    # --- stopping ---------------------------------------------------------------

    async def _cancel_outstanding(self) -> None:
        if not self.sent:
            return
        import ray

        for sent in self.sent.values():
            try:
                ray.cancel(sent.ref)
            except Exception:  # already finished or its worker is gone
                logger.debug("could not cancel an evaluation chunk", exc_info=True)
        # Wait (bounded) so the cancelled chunks' errors are observed, not leaked.
        await asyncio.wait(self.sent, timeout=CANCEL_GRACE_S)
        unanswered: list[_Sent] = []
        for future, sent in self.sent.items():
            answer = None
            if future.done() and not future.cancelled() and future.exception() is None:
                answer = future.result()
            if isinstance(answer, LeasedChunk) and sent.grant is not None:
                self._lease_returned(sent, answer)
            elif sent.grant is not None:
                unanswered.append(sent)
        self.sent.clear()
        if unanswered:
            await self._collect_leases(unanswered)

    async def _collect_leases(self, unanswered: list[_Sent]) -> None:
        """Ask the workers what the leases of cancelled chunks spent; a worker that
        does not say (gone, slow) has its chunks' leases counted as spent whole."""
        by_handle: dict[Any, list[_Sent]] = {}
        for sent in unanswered:
            by_handle.setdefault(sent.handle, []).append(sent)

        async def ask(handle: Any, chunks: list[_Sent]) -> None:
            reported: dict[int, Claim] = {}
            try:
                ids = [sent.chunk.id for sent in chunks]
                reported = await asyncio.wait_for(
                    asyncio.wrap_future(
                        handle.lease_spent.remote(self.spec.run_id, ids).future()
                    ),
                    CANCEL_GRACE_S,
                )
            except Exception:  # the worker is gone or stuck: assume the worst
                logger.debug("no lease report from a cancelled chunk's worker", exc_info=True)
            for sent in chunks:
                self._lease_lost(sent, reported.get(sent.chunk.id))

        await asyncio.gather(*(ask(handle, chunks) for handle, chunks in by_handle.items()))

    def _end_run(self) -> None:
        for slot in self.slots:
            if not slot.retired:
                slot.handle.end_run.remote(self.spec.run_id)

    def outcome(self) -> RunOutcome:
        rows = [row for row in self.rows if row is not None]
        # Devset order: arrival order across workers is not reproducible.
        failures = sorted(self.failures, key=lambda failure: failure.index)
        return RunOutcome(
            results=rows,
            failures=failures,
            usage=self.usage,
            budget_charged=self.budget is not None,
        )


def _budget_stopped(row: ChunkRow) -> bool:
    value = row[3]
    return not row[1] and isinstance(value, ExampleError) and value.budget


def _needed(row: ChunkRow) -> Claim:
    value = row[3]
    needed = getattr(value, "needed", None)
    return needed if isinstance(needed, Claim) else Claim(1, 0.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}"


# --- the entry point -------------------------------------------------------------


def _payload(program: Any, metric: Any) -> tuple[str, bytes]:
    shipped = {name: settings.get(name) for name in SHIPPED_SETTINGS}
    try:
        return pack_payload(program, metric, shipped)
    except Exception as exc:
        raise ConfigurationError(
            f"the Ray runner could not pickle the program, metric or settings "
            f"(lm, adapter, callbacks) to ship them to its workers: {type(exc).__name__}: {exc}. "
            "Make them picklable (cloudpickle), or evaluate in-process with "
            "Evaluate(..., runner='local')"
        ) from exc


def _default_workers(devset: Iterable[Any]) -> int:
    count = alive_nodes() * WORKERS_PER_NODE
    try:
        size = len(devset)  # type: ignore[arg-type]
    except TypeError:
        return count
    # A small devset does not need a process per node.
    return max(1, min(count, math.ceil(size / MAX_CHUNK)))


async def run_ray(
    program: Any,
    metric: Any,
    devset: Iterable[Any],
    options: RunOptions,
    progress: Progress | None = None,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
    pool: EvalWorkerPool | None = None,
    max_attempts: int = 3,
    stats: DispatchStats | None = None,
) -> RunOutcome:
    """Evaluate `program` on `devset` across Ray workers; results in devset order.

    `workers` defaults to one per alive node, `chunk_size` to half a worker's
    share of ``options.num_threads`` (at most 32); `pool` to `default_pool()`.
    An example whose worker died `max_attempts` times is recorded as failed.
    Raises `EvaluationError` once more than ``options.max_errors`` examples
    fail, after cancelling the chunks still out.
    """
    import ray

    if not ray.is_initialized():
        raise ConfigurationError(
            "the Ray runner needs Ray: call dspex.runtime.init() (or ray.init()) first, "
            "or evaluate in-process with Evaluate(..., runner='local')"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
    stats = stats if stats is not None else DispatchStats()
    run_plan = plan(options, workers or _default_workers(devset), chunk_size)
    stats.workers, stats.chunk_size = run_plan.workers, run_plan.chunk_size
    stats.per_worker_concurrency = run_plan.concurrency
    stats.max_outstanding_per_worker = run_plan.cap
    key, blob = _payload(program, metric)
    spec = RunSpec(
        run_id=uuid.uuid4().hex,
        payload_key=key,
        payload=ray.put(blob),
        concurrency=run_plan.concurrency,
        failure_score=options.failure_score,
        provide_traceback=options.provide_traceback,
        pool_mode=routing_mode(),
    )
    dispatch = _Dispatch(
        pool or default_pool(),
        spec,
        run_plan,
        options,
        progress or NullProgress(),
        stats,
        max_attempts,
        calls_per_example=_predictor_count(program),
    )
    await dispatch.run(devset)
    if dispatch.aborted is not None:
        raise dispatch.aborted
    if dispatch.stopped and dispatch.failures and _over_limit(dispatch):
        raise too_many_errors(dispatch.failures, dispatch.exceptions, options.max_errors)
    return dispatch.outcome()


def _predictor_count(program: Any) -> int:
    """A first guess at an example's LM calls (one per predictor), for sizing leases."""
    predictors = getattr(program, "predictors", None)
    if not callable(predictors):
        return 1
    try:
        return max(1, len(predictors()))
    except Exception:  # a program whose predictors() fails still evaluates
        return 1


def _over_limit(dispatch: _Dispatch) -> bool:
    limit = dispatch.options.max_errors
    return limit is not None and len(dispatch.failures) > limit


# The runtime fills the core's evaluation-runner seam: wherever this module is loaded,
# Evaluate(runner="ray") can run here; dspex.init() makes it the default.
register_runner(Runner("ray", run_ray, remote=True))
