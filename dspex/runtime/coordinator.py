"""OptimizationCoordinator: one optimization run, as a supervised actor.

The driver ships the run's *job* (optimizer, student, datasets, compile options
and the settings the program reads) to the run store, then asks the
``dspex.optimizers`` supervisor to start a coordinator named
``dspex.run.<run_id>`` (transient). The coordinator loads the job from the
store and runs ``optimizer.acompile(...)`` in-process; every finished step is
a durable checkpoint of the `Run` (see run.py).

Why the job lives in the run store rather than in the child spec or an object
ref: a restart must not depend on the driver (an object ref dies with its
owner), the spec's args stay two short strings, and a later driver can resume
the run from the run id alone (`dspex.runtime.runs.resume`). The store
holds no secret: an `LM` pickles without its API key.

Restart = resume. If the coordinator dies, its supervisor starts it again with
the same args; it reloads the job and re-runs the compile from the top, the
stored steps replaying, so a deterministic run ends with the same program.
When the compile ends the coordinator stores the result and keeps it for the
driver (``result()``); the driver then stops it through the supervisor (clean,
not restarted). Nobody collecting it, it exits by itself after ``linger``
seconds; the stored result still answers a late driver.

Placement: the store is a SQLite file on one machine, so the coordinator must
run where that file is. The driver writes the job there and pins the
coordinator to its own node (hard node affinity) with the store's absolute path
as an argument, rather than trusting the worker's environment or a guess that
the store is on the head node. A driver is normally on the head node (scripts,
``ray job submit``), so this is the head node in practice.

Ray is imported only inside functions: the driver side imports this module
lazily, and `runs_api` uses its pure helpers without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError, DspexError, RunCancelledError
from dspex.optimizers.run_store import RunStore
from dspex.runtime.names import NAMESPACE, OPTIMIZERS_SUPERVISOR, ROOT_SUPERVISOR, RUN_PREFIX
from dspex.runtime.supervision.child import Supervised

if TYPE_CHECKING:
    from dspex.runtime.supervision.child_spec import ChildSpec

log = logging.getLogger("dspex.optimizers")

# Step keys the coordinator owns; they are not the optimizer's checkpoints.
RESERVED_PREFIX = "coordinator:"
JOB_KEY = RESERVED_PREFIX + "job"
RESULT_KEY = RESERVED_PREFIX + "result"
LINGER_SECONDS = 600.0
"""How long a finished coordinator waits for a driver to collect its result."""
SHUTDOWN_SECONDS = 10.0
"""How long a stopped coordinator gets to mark its run cancelled before it is killed."""
SPARE_IDLE_SECONDS = 300.0
"""How long a warm spare coordinator waits to be claimed before it exits."""
SUPERVISOR_WAIT_SECONDS = 30.0
"""How long a driver waits for the tree's ``dspex.optimizers`` supervisor to come back."""
# Settings a program reads while the optimizer runs it (the rest are per call).
JOB_SETTINGS = (
    "lm",
    "adapter",
    "max_trace_size",
    "callbacks",
    "disable_history",
    "max_history_size",
    "rollout_id",
    "rm",  # the retriever dspex.Retrieve searches
    "redactors",  # dspex.privacy: requests are redacted where they are made
    "num_threads",
    "max_errors",
)


def coordinator_name(run_id: str) -> str:
    return RUN_PREFIX + run_id


def new_run_id(optimizer: Any) -> str:
    # The format Run.open uses, so ids look alike whichever way a run started.
    return f"{type(optimizer).__name__.lower()}-{uuid.uuid4().hex[:10]}"


def new_slot_id() -> str:
    """The id of a reusable (spare) coordinator: it serves one run after another."""
    return f"coordinator-{uuid.uuid4().hex[:10]}"


# --- the job: everything a coordinator needs, pickled into the run store -----------


@dataclass
class Job:
    optimizer: Any
    student: Any
    trainset: list[Any]
    valset: list[Any] | None
    max_lm_calls: int | None
    max_cost: float | None
    kwargs: dict[str, Any]
    settings: dict[str, Any]
    fan_out: bool = False
    """Evaluate on EvalWorker actors (the driver had the dspex runtime up)."""
    pools: str | bool | None = None
    """Route LM calls through provider pools in this mode, as the driver did (None: not;
    True, from runs stored by an older dspex: the default mode)."""


def make_job(
    optimizer: Any,
    student: Any,
    *,
    trainset: Sequence[Any],
    valset: Sequence[Any] | None,
    max_lm_calls: int | None,
    max_cost: float | None,
    kwargs: dict[str, Any],
) -> Job:
    """The job of a compile called in this process (its settings and runtime state included)."""
    from dspex import runtime
    from dspex.primitives.settings import settings
    from dspex.runtime.pools.pool_client import routing_mode

    return Job(
        optimizer=optimizer,
        student=student,
        trainset=list(trainset),
        valset=None if valset is None else list(valset),
        max_lm_calls=max_lm_calls,
        max_cost=max_cost,
        kwargs=dict(kwargs),
        settings={name: settings.get(name) for name in JOB_SETTINGS},
        fan_out=runtime.active(),
        pools=routing_mode(),
    )


def _pickler() -> Any:
    # Ray's cloudpickle: code registered to ship by value (a notebook, a test
    # module) ships by value here as it does everywhere else in Ray.
    from ray import cloudpickle

    return cloudpickle


def save_job(store: RunStore, run_id: str, job: Job) -> None:
    """Store the job of the coordinator about to start and forget any older result."""
    try:
        blob = _pickler().dumps(job)
    except Exception as exc:
        raise ConfigurationError(
            f"could not pickle the optimizer, program, datasets or settings (lm, adapter, "
            f"callbacks) to ship them to the run's coordinator: {type(exc).__name__}: {exc}. "
            "Make them picklable (cloudpickle), or compile in-process with coordinator=False"
        ) from exc
    store.put_step(run_id, JOB_KEY, blob)
    store.put_step(run_id, RESULT_KEY, None)  # a result is only valid for the job before it


def load_job(store: RunStore, run_id: str) -> Job:
    found, blob = store.get_step(run_id, JOB_KEY)
    if not found or blob is None:
        raise ConfigurationError(
            f"run {run_id!r} in {store.path} has no coordinator job: it was compiled in-process. "
            "Resume it by calling optimizer.compile(..., run_id=...) again with the same arguments"
        )
    job: Job = _pickler().loads(blob)
    return job


def stored_result(store: RunStore, run_id: str) -> Any | None:
    """The program a finished run's coordinator stored, or None."""
    if not store.has_run(run_id) or store.get_run(run_id).status != "finished":
        return None
    found, blob = store.get_step(run_id, RESULT_KEY)
    return _pickler().loads(blob) if found and blob is not None else None


def count_steps(store: RunStore, run_id: str) -> int:
    """The optimizer's stored steps (checkpoints), not counting the coordinator's own keys."""
    return sum(not key.startswith(RESERVED_PREFIX) for key in store.step_keys(run_id))


# --- progress ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunProgress:
    """What ``coordinator.progress()`` reports; everything but ``state`` comes from the store."""

    run_id: str
    optimizer: str
    state: str
    """running, finished, failed or cancelled (this coordinator's compile)."""
    steps: int
    resumed_steps: int
    """Steps already stored when this coordinator started: > 0 after a restart."""
    trials: int
    best_score: float | None
    lm_calls: int
    cost: float
    elapsed: float
    error: str | None = None

    def line(self) -> str:
        """e.g. ``run rs-1: running  12 steps  5 trials  best 0.85  340 LM calls  7s``."""
        best = "-" if self.best_score is None else f"{self.best_score:.4g}"
        parts = [
            f"run {self.run_id}: {self.state}",
            f"{self.steps} steps" + (f" ({self.resumed_steps} resumed)" if self.resumed_steps else ""),
            f"{self.trials} trials",
            f"best {best}",
            f"{self.lm_calls} LM calls",
        ]
        if self.cost:
            parts.append(f"${self.cost:.4f}")
        parts.append(f"{self.elapsed:.0f}s")
        return "  ".join(parts)


def read_progress(
    store: RunStore, run_id: str, *, state: str, resumed_steps: int, elapsed: float
) -> RunProgress:
    record = store.get_run(run_id) if store.has_run(run_id) else None
    usage = store.usage(run_id).values()
    return RunProgress(
        run_id=run_id,
        optimizer=record.optimizer if record else "?",
        state=state,
        steps=count_steps(store, run_id),
        resumed_steps=resumed_steps,
        trials=len(store.trials(run_id)),
        best_score=record.best_score if record else None,
        lm_calls=int(sum(u["calls"] for u in usage)),
        cost=float(sum(u["cost"] for u in usage)),
        elapsed=elapsed,
        error=record.error if record else None,
    )


# --- the coordinator -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a coordinator's compile ended: ``blob`` is the pickled program or exception."""

    state: str  # finished, failed, cancelled
    blob: bytes | None = None


IN_PROCESS_MAX_EXAMPLES = 128
"""Evaluations of at most this many examples run inside the coordinator, on asyncio (the
in-process runner); bigger ones fan out to EvalWorker actors.

Why: an optimizer's evaluations are mostly small (a MIPROv2 minibatch is 35 examples, a
valset 100 or so) and many run at once. On the workers each pays the program's shipping
and a chunk round trip per few examples, and concurrent trials queue behind each other's
chunks: measured, MIPROv2 light's LM traffic took twice as long there as in one process.
An example costs the caller about 0.5 ms of CPU per LM call, so a few hundred examples
are well within one process; spreading only pays off for big evaluations, where the
work of many processes (and nodes) adds up. ``RayEvaluator(in_process_max=...)``
overrides it per run (0: always fan out)."""


class RayEvaluator:
    """A run's evaluator on the runtime: small evaluations in this process, big ones fanned
    out to EvalWorker actors (a class, so the run's stored config names it).

    Either way the run sees the usage the way it sees an in-process evaluation's: LM calls
    made here reach its usage trackers and budget as they happen; a fanned-out evaluation
    spends the budget through its workers' leases and its usage is added to the trackers
    when it returns (`record_usage`). So ``remote`` is False: the run must not charge it again.
    """

    remote = False

    def __init__(self, in_process_max: int = IN_PROCESS_MAX_EXAMPLES) -> None:
        if in_process_max < 0:
            raise ConfigurationError(f"in_process_max must be at least 0, got {in_process_max}")
        self.in_process_max = in_process_max

    def runner_for(self, devset: Sequence[Any]) -> str:
        """``"local"`` or ``"ray"``: where an evaluation of ``devset`` runs."""
        return "local" if len(devset) <= self.in_process_max else "ray"

    def runs_in_process(self, devset: Sequence[Any]) -> bool:
        """Whether ``devset`` is evaluated in this process (see `dspex.optimizers.run.Evaluator`)."""
        return self.runner_for(list(devset)) == "local"

    async def __call__(self, program: Any, devset: Any, metric: Any, **options: Any) -> Any:
        from dspex.evaluate.evaluate import Evaluate

        devset = list(devset)
        runner = self.runner_for(devset)
        options.setdefault("display_progress", False)
        if runner == "local":
            return await Evaluate(devset=devset, metric=metric, runner="local", **options).acall(program)
        from dspex.runtime.evaluation import ray_runner  # noqa: F401  (registers runner="ray")

        result = await Evaluate(devset=devset, metric=metric, runner="ray", **options).acall(program)
        _account_remote(result)
        return result

    def __repr__(self) -> str:
        return f"RayEvaluator(in_process_max={self.in_process_max})"


def _account_remote(result: Any) -> None:
    """Make a fanned-out evaluation's LM usage count here as an in-process one would."""
    from dspex.clients.budget import CallBudget, active_budget
    from dspex.clients.usage import record_usage
    from dspex.primitives.settings import settings

    usage = getattr(result, "usage", None)
    if usage is None or not usage.calls:
        return
    budget = active_budget()
    if isinstance(budget, CallBudget) and not getattr(result, "budget_charged", False):
        budget.charge(usage)  # the workers ran without a lease of it (not the Ray runner's way)
    record_usage(getattr(settings.lm, "model", None) or "unknown", usage)


class OptimizationCoordinator(Supervised):
    """Runs one optimization run's compile; ``progress()``, ``result()``, ``cancel()``.

    A plain class: ``await OptimizationCoordinator(run_id, path).result()`` works
    without Ray. As an actor it is started by `coordinator_spec`.

    Started before its run has a job (``spare=True``), it is a *warm spare*: the process is
    up, dspex and the optimizers are imported, and it waits for a driver to `claim` it for
    a run, store the job and ask for the result. Its first argument is then a *slot* id
    (its actor's name), not a run id: the run store records which run the slot serves, so
    after its run the driver can `recycle` it into a spare for the next run and a driver's
    runs pay no actor start after the first (see runs.py). A spare nobody claims exits by
    itself after ``spare_idle`` seconds. Restarted after a crash, a slot carries on with
    the run it was serving (loading the job if one was stored by then), else it is a
    spare again.
    """

    def __init__(
        self,
        run_id: str,
        store_path: str,
        linger: float = LINGER_SECONDS,
        spare: bool = False,
        spare_idle: float = SPARE_IDLE_SECONDS,
    ) -> None:
        self.slot = run_id if spare else None
        """A spare's own id (its actor is named after it), kept across the runs it serves."""
        self.run_id = run_id
        self.store = RunStore(store_path)
        self._job: Job | None = None
        self._resumed_steps = 0
        self._claimed = False
        serving = self.store.slot_run(run_id) if spare else None
        if serving is not None and self.store.get_step(serving, RESULT_KEY)[1] is None:
            # Restarted while serving a run (or between its claim and its job): carry on.
            self.run_id, self._claimed = serving, True
        if not spare or self.store.get_step(self.run_id, JOB_KEY)[0]:
            # Loaded here so a job that cannot be unpickled fails the start, not a later call.
            self._load()
        self._spare_idle = spare_idle
        self._idle: asyncio.TimerHandle | None = None
        self._linger = linger
        self._lingering: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._outcome: Outcome | None = None

    async def ready(self) -> dict[str, Any]:
        from dspex.runtime.supervision import events

        events.connect_event_log()  # the run's trial events reach the cluster's log, if any
        if self._job is not None:
            self._ensure_started()
        elif self._idle is None and not self._claimed:
            self._wait_for_claim()
            asyncio.get_running_loop().call_soon(_warm_imports)
        return await super().ready()

    async def claim(self, run_id: str | None = None) -> bool:
        """Reserve this spare for the run ``run_id``: True once, for the first caller, while
        it is idle (False if it already has a job or is exiting). Without ``run_id`` the
        spare serves the run named by its own id."""
        if self._claimed or self._job is not None or self.exit_reason is not None:
            return False
        self._claimed = True
        if self._idle is not None:
            self._idle.cancel()
        if run_id is not None and self.slot is not None:
            self.store.assign_slot(self.slot, run_id)  # before the job: a restart must know
            self.run_id = run_id
        return True

    async def recycle(self) -> bool:
        """Make this finished slot a spare again, for its driver's next run: True if it
        is one now (False: not a slot, its run not over, or it is exiting)."""
        if self.slot is None or self._outcome is None or self.exit_reason is not None:
            return False
        if self._lingering is not None:
            self._lingering.cancel()
        self.store.release_slot(self.slot)
        self.run_id = self.slot
        self._job, self._task, self._outcome = None, None, None
        self._claimed, self._resumed_steps = False, 0
        self._wait_for_claim()
        return True

    async def progress(self) -> RunProgress:
        state = "running" if self._outcome is None else self._outcome.state
        elapsed = time.monotonic() - self._started
        return read_progress(
            self.store, self.run_id, state=state, resumed_steps=self._resumed_steps, elapsed=elapsed
        )

    async def result(self) -> Outcome:
        """Wait for the compile to end; idempotent, any number of callers."""
        task = self._ensure_started()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this call was cancelled, not the compile
        # No outcome: the task was cancelled before its first step (cancel() before ready()).
        return self._outcome or Outcome("cancelled")

    async def cancel(self) -> None:
        """Stop the compile; the run is marked cancelled and can be resumed later."""
        if self._task is None and self._job is None:
            return  # an unclaimed spare: no run to cancel
        task = self._ensure_started()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def terminate(self, reason: str = "shutdown") -> None:
        # The supervisor stops us: mark the run cancelled (resumable) rather than leave it "running".
        await self.cancel()

    # --- internals ---------------------------------------------------------------------------

    def _ensure_started(self) -> asyncio.Task[None]:
        if self._task is None:
            if self._job is None:
                # A claimed spare: its driver stored the job before asking for the result.
                self._load()
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    def _load(self) -> None:
        self._job = load_job(self.store, self.run_id)
        self._resumed_steps = count_steps(self.store, self.run_id)
        self._started = time.monotonic()

    def _wait_for_claim(self) -> None:
        self._idle = asyncio.get_running_loop().call_later(self._spare_idle, self._expire)

    def _expire(self) -> None:
        # Never claimed: a clean exit (not restarted); the driver that started it
        # forgets its spec when it next looks for a spare.
        if not self._claimed and self._job is None:
            self.exit("normal")

    async def _run(self) -> None:
        try:
            blob = _pickler().dumps(await self._compile())
        except asyncio.CancelledError:
            self._settle(Outcome("cancelled"))
            raise
        except Exception as exc:  # the optimizer's error, or a program that cannot be pickled
            log.warning("run %s failed: %s: %s", self.run_id, type(exc).__name__, exc)
            self._settle(Outcome("failed", _dump_error(exc)))
        else:
            self.store.put_step(self.run_id, RESULT_KEY, blob)
            self._settle(Outcome("finished", blob))

    async def _compile(self) -> Any:
        from dspex.primitives.settings import context

        job = self._job
        assert job is not None  # _ensure_started loaded it
        optimizer = job.optimizer
        if job.fan_out and optimizer.evaluator is None:
            optimizer.evaluator = RayEvaluator()
        if job.pools:
            from dspex.runtime.pools.pool_client import enable_pools

            enable_pools(mode=job.pools if isinstance(job.pools, str) else None)  # type: ignore[arg-type]
        # A run stored by an older dspex may name settings this version no longer ships:
        # cache_dir (removed; nothing read it) and track_usage (now always True).
        with context(**{k: v for k, v in job.settings.items() if k in JOB_SETTINGS}):
            return await optimizer.acompile(
                job.student,
                trainset=job.trainset,
                valset=job.valset,
                run_id=self.run_id,
                max_lm_calls=job.max_lm_calls,
                max_cost=job.max_cost,
                store=self.store,
                coordinator=False,
                **job.kwargs,
            )

    def _settle(self, outcome: Outcome) -> None:
        self._outcome = outcome
        # Clean exits either way: a failed compile would fail again if restarted.
        reason = "normal" if outcome.state == "finished" else f"shutdown:{outcome.state}"
        self._lingering = asyncio.get_running_loop().call_later(self._linger, self.exit, reason)


WARM_MODULES = (
    "dspex.optimizers",
    "dspex.optimizers.mipro",
    "dspex.optimizers.proposer",
    "dspex.evaluate.evaluate",
    "dspex.runtime.evaluation.ray_runner",
    "dspex.runtime.pools.lease_client",
    # The run makes its own HTTP calls under pool leases: aiohttp's import (~0.3 s of CPU,
    # measured 1.3 s on a loaded machine) must not stand before its first request.
    "dspex.clients.aiohttp_transport",
    "optuna",
)
"""What a spare imports while it waits, so its run does not wait for the imports."""


def _warm_imports() -> None:
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # an optional dependency missing: the run imports (or fails) later
            log.debug("spare coordinator could not import %s", name, exc_info=True)


def _dump_error(exc: BaseException) -> bytes:
    pickler = _pickler()
    try:
        blob: bytes = pickler.dumps(exc)
        pickler.loads(blob)  # some exceptions pickle but cannot be rebuilt
        return blob
    except Exception:
        return bytes(pickler.dumps(DspexError(f"{type(exc).__name__}: {exc}")))


def load_outcome(outcome: Outcome, run_id: str) -> Any:
    """The program of a finished outcome; raises the run's error otherwise."""
    if outcome.state == "finished":
        assert outcome.blob is not None
        return _pickler().loads(outcome.blob)
    if outcome.state == "failed" and outcome.blob is not None:
        raise _pickler().loads(outcome.blob)
    raise RunCancelledError(
        f"run {run_id!r} was cancelled in its coordinator; call compile(..., run_id={run_id!r}) "
        "again to resume it from its stored steps"
    )


# --- starting it under the supervisor ------------------------------------------------------


def coordinator_spec(
    run_id: str, store_path: str | Path, *, node_id: str | None = None, spare: bool = False
) -> ChildSpec:
    """The child spec of a run's coordinator: the same args on every restart, so a
    restart resumes the run. ``node_id``: where the store file is (default: this node).
    ``spare``: start it before the run has a job, as a warm spare (see the class)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from dspex.runtime.supervision.child_spec import ChildSpec

    node = node_id or ray.get_runtime_context().get_node_id()
    return ChildSpec(
        name=coordinator_name(run_id),
        cls=OptimizationCoordinator,
        args=(run_id, str(Path(store_path).resolve()), LINGER_SECONDS, spare),
        restart="transient",
        shutdown=SHUTDOWN_SECONDS,
        actor_options={
            # Mostly waiting on LM calls: it must not take a CPU slot from evaluation workers.
            "num_cpus": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        },
    )


async def optimizers_supervisor(timeout: float = SUPERVISOR_WAIT_SECONDS) -> Any:
    """The ``dspex.optimizers`` supervisor: the application tree's (``dspex.init()``), else
    a standalone one (detached, on the head node) started by whichever driver comes first.

    While the tree is up but its optimizers branch is restarting, wait for it: a
    standalone supervisor would take the branch's name and make its restart fail.
    """
    deadline = time.monotonic() + timeout
    while True:
        handle = _named(OPTIMIZERS_SUPERVISOR)
        if handle is not None:
            return handle
        if _named(ROOT_SUPERVISOR) is None:
            return await _start_standalone()
        if time.monotonic() >= deadline:
            raise ConfigurationError(
                f"the dspex tree runs but its {OPTIMIZERS_SUPERVISOR!r} supervisor did not come "
                f"back within {timeout:.0f}s; see `dspex status`"
            )
        await asyncio.sleep(0.05)


async def _start_standalone() -> Any:
    from dspex.errors import ChildStartError
    from dspex.runtime.supervision.supervisor import get_supervisor, start_supervisor_async

    try:
        return await start_supervisor_async(
            OPTIMIZERS_SUPERVISOR,
            # Like the tree's branches: no CPU slot, on the head node, which dies only with the cluster.
            actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
            # The supervisor joins the cluster's event log if there is one; the driver
            # does not start forwarding its own events just because it asked for a run.
            event_log=False,
            # Runs are independent: one run's crashes must not take the others down soon.
            max_restarts=10,
            max_seconds=60.0,
        )
    except ChildStartError:
        return get_supervisor(OPTIMIZERS_SUPERVISOR)  # another driver started it meanwhile


def _named(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


__all__ = [
    "OPTIMIZERS_SUPERVISOR",
    "Job",
    "OptimizationCoordinator",
    "Outcome",
    "RayEvaluator",
    "RunCancelledError",
    "RunProgress",
    "coordinator_name",
    "new_slot_id",
    "coordinator_spec",
    "load_outcome",
    "optimizers_supervisor",
]

