"""The driver's view of optimization runs: list them, run them in a coordinator, resume them.

- `runs()` lists the runs of a run store with their status, steps, trials and
  LM usage (and whether a coordinator is alive, when Ray is connected).
- `compile_remote` is what ``optimizer.compile(...)`` calls when the run goes
  through a coordinator (see coordinator.py): it attaches to the run's
  coordinator by name if one is alive, else starts one, shows progress while
  waiting, and collects the program. Cancelling the wait (Ctrl-C, a cancelled
  task, a dead driver) leaves the coordinator running; calling compile again
  with the same ``run_id`` attaches to it, or to the program it stored.
- `resume(run_id)` does the same from the run id alone, using the job a
  coordinator run stored.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError, CoordinatorUnavailableError
from dspex.optimizers.backends import COORDINATOR, register_compile_backend
from dspex.optimizers.run_store import RunStore
from dspex.runtime.coordinator import (
    JOB_KEY,
    RESULT_KEY,
    Job,
    RunProgress,
    coordinator_name,
    count_steps,
    load_job,
    make_job,
    new_run_id,
    stored_result,
)
from dspex.runtime.names import NAMESPACE
from dspex.utils.aio import run_sync

if TYPE_CHECKING:
    from rich.status import Status

log = logging.getLogger("dspex.optimizers")

POLL_SECONDS = 0.05  # between look-ups while a coordinator starts or restarts
PROGRESS_SECONDS = 0.5  # between progress reads while waiting for the result
RESTART_WAIT_SECONDS = 120.0
"""How long a driver waits for a dead coordinator to be back before it gives up."""
PLAIN_PROGRESS_SECONDS = 10.0  # between progress log lines when not on a terminal
LIVENESS_TIMEOUT = 5.0  # for `runs()` asking a registered coordinator whether it is alive


# --- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One row of `runs()`."""

    run_id: str
    optimizer: str
    status: str
    """The store's status: running, finished, budget_limited, failed or cancelled."""
    best_score: float | None
    steps: int
    trials: int
    lm_calls: int
    cost: float
    created: float
    updated: float
    error: str | None
    has_result: bool
    """A coordinator stored the finished program: a late driver gets it at once."""
    coordinator: bool | None
    """A coordinator is alive for the run; None when this process is not connected to Ray."""


def runs(store: RunStore | str | Path | None = None, *, limit: int = 100) -> list[RunSummary]:
    """The most recent runs of ``store`` (default: ``DSPEX_RUNS_DB`` or the user data dir)."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    return [_summary(store, record.run_id) for record in store.list_runs(limit)]


def _summary(store: RunStore, run_id: str) -> RunSummary:
    record = store.get_run(run_id)
    usage = store.usage(run_id).values()
    found, result = store.get_step(run_id, RESULT_KEY)
    return RunSummary(
        run_id=run_id,
        optimizer=record.optimizer,
        status=record.status,
        best_score=record.best_score,
        steps=count_steps(store, run_id),
        trials=len(store.trials(run_id)),
        lm_calls=int(sum(u["calls"] for u in usage)),
        cost=float(sum(u["cost"] for u in usage)),
        created=record.created,
        updated=record.updated,
        error=record.error,
        has_result=found and result is not None,
        coordinator=_coordinator_alive(store, run_id),
    )


def _coordinator_alive(store: RunStore, run_id: str) -> bool | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None  # never start or connect Ray just to list runs
    slot = store.run_slot(run_id)
    names = [coordinator_name(slot)] if slot is not None else []
    return any(_name_alive(ray, name) for name in [*names, coordinator_name(run_id)])


def _name_alive(ray: Any, name: str) -> bool:
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    # Ray frees a killed actor's name a little after its death: ask the actor itself.
    try:
        ray.get(handle.__ray_ready__.remote(), timeout=LIVENESS_TIMEOUT)
    except ray.exceptions.RayActorError:
        return False
    except ray.exceptions.GetTimeoutError:
        return True  # registered and not dead, only slow to answer
    return True


# --- running through a coordinator ---------------------------------------------------------------


async def compile_remote(
    optimizer: Any,
    student: Any,
    *,
    trainset: Sequence[Any],
    valset: Sequence[Any] | None = None,
    run_id: str | None = None,
    max_lm_calls: int | None = None,
    max_cost: float | None = None,
    store: RunStore | None = None,
    **kwargs: Any,
) -> Any:
    """``optimizer.acompile(...)`` run by the run's coordinator actor; returns the program.

    Without a ``run_id`` the run takes this driver's warm spare coordinator if it has one
    (no actor start to wait for) and gives it back as the spare for the next run when it
    is done. A run that found no spare starts its own coordinator and, once that is up,
    a spare for the next run (`KEEP_SPARE`).
    """
    store = store or RunStore()
    spare_key = (type(optimizer).__name__, str(Path(store.path).resolve()))
    warm = run_id is None and KEEP_SPARE
    run_id = run_id or new_run_id(optimizer)
    slot = await _spares.take(spare_key, run_id) if warm else None

    def job() -> Job:
        return make_job(
            optimizer,
            student,
            trainset=trainset,
            valset=valset,
            max_lm_calls=max_lm_calls,
            max_cost=max_cost,
            kwargs=kwargs,
        )

    def started(supervisor: Any) -> None:
        # The next run's spare starts while this run works (its LM traffic leaves the CPU
        # mostly idle), after this run's own coordinator, which must not queue behind it.
        if warm and slot is None:
            _spares.replenish(spare_key, supervisor)

    attachment = _Attachment(run_id, store, job, slot=slot, on_started=started)
    program = await attachment.result()
    if attachment.finished_slot is not None:
        await _spares.give_back(spare_key, *attachment.finished_slot)
    return program


async def aresume(run_id: str, *, store: RunStore | str | Path | None = None) -> Any:
    """Finish a run started through a coordinator, from its run id alone: attach to its
    coordinator, or start one from the job the run stored; returns the program."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    load_job(store, run_id)  # fails now, with the reason, if there is nothing to resume
    return await _Attachment(run_id, store, None).result()


def resume(run_id: str, *, store: RunStore | str | Path | None = None) -> Any:
    """Synchronous `aresume`."""
    return run_sync(aresume(run_id, store=store))


# --- warm spare coordinators ---------------------------------------------------------------------

KEEP_SPARE = True
"""Keep a warm spare coordinator per (optimizer class, run store) for this driver's next run
without a ``run_id``: an actor start (about 1 s here: a process, Ray, dspex's imports) is
then paid in the background after a run rather than at the start of the next. False: every
run starts its coordinator when it starts."""


class _Spares:
    """This driver's spare coordinators: one per key, taken by a run and given back after it.

    A spare is a reusable run coordinator (a *slot*, see `OptimizationCoordinator`) that
    waits for a run; `take` claims it for a run id (the coordinator answers yes once), so
    two drivers or two concurrent compiles never share one. After its run the slot is
    recycled into the spare again, so a driver's runs after the first start no process.
    """

    def __init__(self) -> None:
        self._spares: dict[tuple[str, ...], tuple[str, Any, Any]] = {}
        """(Ray job, *key) -> (slot id, the supervisor, the start_child call's ref or None);
        keyed by the Ray job too, so a driver that reconnected never waits on an old
        session's ref."""

    async def take(self, key: tuple[str, str], run_id: str) -> str | None:
        """The slot id of a spare for ``key`` claimed for ``run_id``, or None (the run
        starts its own coordinator)."""
        from ray.exceptions import RayActorError, RayError

        from dspex.errors import DspexError

        entry = self._spares.pop(_session(key), None)
        if entry is None:
            return None
        slot, supervisor, started = entry
        try:
            if started is not None:
                await started  # normally long done; else waiting beats starting another
            handle = _named(coordinator_name(slot))
            if handle is not None and await handle.claim.remote(run_id):
                return slot
        except (RayActorError, DspexError, RayError):
            log.debug("spare coordinator %s unusable", slot, exc_info=True)
        await _forget(supervisor, slot)
        return None

    def replenish(self, key: tuple[str, str], supervisor: Any) -> None:
        """Start a spare for ``key`` if there is none (does not wait for it to be up)."""
        from dspex.runtime.coordinator import coordinator_spec, new_slot_id

        if _session(key) in self._spares or supervisor is None:
            return
        slot = new_slot_id()
        started = supervisor.start_child.remote(coordinator_spec(slot, key[1], spare=True))
        self._spares[_session(key)] = (slot, supervisor, started)

    async def give_back(self, key: tuple[str, str], slot: str, handle: Any, supervisor: Any) -> None:
        """Keep a slot whose run is over as the spare for ``key``, or stop it if there is
        a spare already (or it cannot be one again)."""
        from ray.exceptions import RayError

        from dspex.errors import DspexError

        if _session(key) not in self._spares:
            try:
                if await handle.recycle.remote():
                    self._spares[_session(key)] = (slot, supervisor, None)
                    return
            except (DspexError, RayError):
                log.debug("coordinator %s could not be recycled", slot, exc_info=True)
        await _forget(supervisor, slot)


_spares = _Spares()


def _session(key: tuple[str, str]) -> tuple[str, ...]:
    import ray

    return (ray.get_runtime_context().get_job_id(), *key)


async def _forget(supervisor: Any, slot: str) -> None:
    """Stop a spare that is not needed or not usable and drop its spec (it may be gone)."""
    from ray.exceptions import RayError

    from dspex.errors import DspexError

    for method in ("terminate_child", "delete_child"):
        try:
            await getattr(supervisor, method).remote(coordinator_name(slot))
        except (DspexError, RayError):
            log.debug("spare coordinator %s: %s failed", slot, method, exc_info=True)


def _named(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


class _Attachment:
    """One driver's link to a run's coordinator: find or start it, wait, collect, release."""

    def __init__(
        self,
        run_id: str,
        store: RunStore,
        make_job: Callable[[], Job] | None,
        *,
        slot: str | None = None,
        on_started: Callable[[Any], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.slot = slot
        """The spare this driver claimed for the run (it waits for the job), if any."""
        self.name = coordinator_name(slot or run_id)
        self.store = store
        self.make_job = make_job  # None: resume with the job already stored
        self.on_started = on_started
        """Called with the supervisor once the run's coordinator is up (or found)."""
        self.finished_slot: tuple[str, Any, Any] | None = None
        """(slot, its handle, the supervisor) once the claimed slot delivered the outcome:
        it is not stopped, the driver may give it back as a spare."""
        self._dead: set[str] = set()  # actor ids known dead: their name may linger briefly
        self._supervisor: Any = None

    async def result(self) -> Any:
        from ray.exceptions import RayActorError

        from dspex.runtime.coordinator import load_outcome, optimizers_supervisor, save_job

        program = stored_result(self.store, self.run_id)
        if program is not None:
            log.info("run %s finished earlier; returning its stored program", self.run_id)
            return program
        self._supervisor = await optimizers_supervisor()
        if self.slot is not None and self.make_job is not None:
            # The spare is up and waits for its job; asking for its result starts the run.
            save_job(self.store, self.run_id, self.make_job())
        display = _ProgressDisplay()
        try:
            while (handle := await self._coordinator()) is not None:
                if self.on_started is not None:
                    self.on_started(self._supervisor)
                    self.on_started = None
                try:
                    outcome = await _wait(handle, display)
                except RayActorError:
                    self._dead.add(handle._actor_id.hex())
                    log.warning("run %s: its coordinator died; waiting for it to resume", self.run_id)
                    continue
                if self.slot is not None:
                    self.finished_slot = (self.slot, handle, self._supervisor)
                else:
                    await self._release()
                return load_outcome(outcome, self.run_id)
            # It stored its program before we got to it (or another driver collected it).
            await self._release()
            return stored_result(self.store, self.run_id)
        except asyncio.CancelledError:
            log.info("detached from run %s; it continues in %s", self.run_id, self.name)
            raise
        finally:
            display.close()

    async def _coordinator(self) -> Any | None:
        """A live coordinator's handle (starting one if there is none), or None if the run
        finished meanwhile."""
        deadline = time.monotonic() + RESTART_WAIT_SECONDS
        while True:
            if stored_result(self.store, self.run_id) is not None:
                return None
            handle = self._lookup()
            if handle is not None:
                return handle
            child = await self._child()
            if child is None or child.state == "terminated":
                await self._start(forget=child is not None)
            elif time.monotonic() >= deadline:  # "restarting" for too long
                raise CoordinatorUnavailableError(
                    f"the coordinator of run {self.run_id!r} did not come back within "
                    f"{RESTART_WAIT_SECONDS:.0f}s; call compile(..., run_id={self.run_id!r}) again later"
                )
            else:
                await asyncio.sleep(POLL_SECONDS)

    async def _child(self) -> Any | None:
        children = await self._ask("which_children")
        return next((child for child in children if child.name == self.name), None)

    async def _ask(self, method: str, *args: Any) -> Any:
        """Call the supervisor; if it died (its coordinators with it), find or start it again."""
        from ray.exceptions import RayActorError

        from dspex.runtime.coordinator import optimizers_supervisor

        try:
            return await getattr(self._supervisor, method).remote(*args)
        except RayActorError:
            self._supervisor = await optimizers_supervisor()
            return await getattr(self._supervisor, method).remote(*args)

    def _lookup(self) -> Any | None:
        import ray

        try:
            handle = ray.get_actor(self.name, namespace=NAMESPACE)
        except ValueError:
            return None
        return None if handle._actor_id.hex() in self._dead else handle

    async def _start(self, *, forget: bool) -> None:
        """Start the coordinator; losing a race to another driver is fine (it is looked up next)."""
        from dspex.errors import ChildAlreadyExistsError, ChildRunningError
        from dspex.runtime.coordinator import coordinator_spec, save_job

        try:
            if forget:  # a coordinator that exited on its own left its spec behind
                await self._ask("delete_child", self.name)
            if self.slot is not None:
                # The claimed spare is gone for good: the run gets a coordinator of its own.
                self.store.release_slot(self.slot)
                self.slot, self.name = None, coordinator_name(self.run_id)
                self.make_job = None  # its job was stored when the spare was claimed
            if self.make_job is not None:
                save_job(self.store, self.run_id, self.make_job())
            elif not self.store.get_step(self.run_id, JOB_KEY)[0]:
                raise ConfigurationError(f"run {self.run_id!r} has no stored job to resume")
            await self._ask("start_child", coordinator_spec(self.run_id, self.store.path))
        except (ChildAlreadyExistsError, ChildRunningError):
            return
        log.info("run %s: started its coordinator", self.run_id)

    async def _release(self) -> None:
        """Stop the finished coordinator (a clean exit: not restarted) and forget its spec."""
        from dspex.errors import ChildNotFoundError, ChildRunningError

        try:
            await self._ask("terminate_child", self.name)
            await self._ask("delete_child", self.name)
        except (ChildNotFoundError, ChildRunningError):
            pass  # another driver released it, or started the next one


async def _wait(handle: Any, display: _ProgressDisplay) -> Any:
    """The coordinator's outcome, reading its progress meanwhile."""
    pending = asyncio.ensure_future(_await_ref(handle.result.remote()))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=PROGRESS_SECONDS)
            if done:
                return pending.result()
            display.update(await handle.progress.remote())
    finally:
        if not pending.done():
            pending.cancel()
        # A death seen through progress() leaves the result's own error unread: read it.
        pending.add_done_callback(lambda task: task.cancelled() or task.exception())


async def _await_ref(ref: Any) -> Any:
    return await ref


class _ProgressDisplay:
    """A live status line on a terminal; an INFO log line every few seconds elsewhere."""

    def __init__(self) -> None:
        self._status: Status | None = None
        self._terminal = sys.stderr.isatty()
        self._next_log = 0.0

    def update(self, progress: RunProgress) -> None:
        line = progress.line()
        if not self._terminal:
            if time.monotonic() >= self._next_log:
                self._next_log = time.monotonic() + PLAIN_PROGRESS_SECONDS
                log.info("%s", line)
            return
        if self._status is None:
            from rich.console import Console

            self._status = Console(stderr=True).status(line)
            self._status.start()
        else:
            self._status.update(line)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


__all__ = ["CoordinatorUnavailableError", "RunSummary", "aresume", "compile_remote", "resume", "runs"]


# The runtime fills the optimizers' compile-backend seam: wherever this module is loaded,
# compile(coordinator=True) runs in a coordinator; dspex.init() makes it the default.
register_compile_backend(COORDINATOR, compile_remote)

