"""Call budgets: a hard cap on LM calls and cost for everything inside a run.

The rule is *reserve before sending*: every HTTP request an LM client is about
to send first reserves its claim (the calls it makes and, under ``max_cost``,
its worst-case cost) and is never sent when the claim does not fit. When the
request ends the reservation is settled to what it really cost (nothing for a
cache hit), so the limit holds exactly, whatever the concurrency.

Two kinds of ledger share that contract:

- `CallBudget` is a run's authority, one per run, in the process that runs the
  optimizer (the driver or its coordinator actor). In-process requests reserve
  from it directly.
- `BudgetLease` is a block carved out of a `CallBudget` with `CallBudget.grant`
  and spent elsewhere (an evaluation worker, for one chunk of examples). It is
  a plain ledger: requests reserve from it locally, with no round trip to the
  authority, and when the chunk ends `CallBudget.close` takes back what the
  lease did not spend. Leases are carved out of what is free, so the sum of
  what was spent and what is leased never exceeds the budget.

The ledger active for the current code lives in a context variable
(`budget_scope`, `active_budget`), so every task and thread that copies the
context reserves from the same one. Nothing here knows about Ray.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from dspex.clients.types import Usage
from dspex.errors import BudgetExceededError

#: float slack when comparing sums of costs against a limit
_COST_EPSILON = 1e-12


@dataclass(frozen=True, slots=True)
class Claim:
    """What one request may spend: the HTTP calls it makes and their cost in USD."""

    calls: int = 1
    cost: float = 0.0

    def fits_in(self, calls: int | None, cost: float | None) -> bool:
        """Whether this claim fits in ``calls``/``cost`` free (None: unlimited)."""
        calls_fit = calls is None or self.calls <= calls
        cost_fit = cost is None or self.cost <= cost + _COST_EPSILON
        return calls_fit and cost_fit


ONE_CALL = Claim(1, 0.0)
NOTHING = Claim(0, 0.0)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A block of a run's budget handed to another process (plain data, picklable).

    ``None`` in a field means that dimension is not limited by the run.
    """

    calls: int | None
    cost: float | None


class Reservation:
    """One request's claim on a ledger, held until `settle` or `release`."""

    __slots__ = ("_done", "_ledger", "claim")

    def __init__(self, ledger: _Ledger, claim: Claim) -> None:
        self._ledger = ledger
        self.claim = claim
        self._done = False

    def settle(self, spent: Claim) -> None:
        """Replace the claim by what the request really spent (once; later calls do nothing)."""
        if self._done:
            return
        self._done = True
        self._ledger._return(self.claim, spent)

    def release(self) -> None:
        """The request was never sent: give the whole claim back."""
        self.settle(NOTHING)


class _Ledger:
    """Limits and what is committed against them (spent plus reserved), behind a lock.

    A `threading.Lock`, not an asyncio one: requests reserve from threads
    (sync programs run in a thread pool) as well as from tasks, and no await
    happens while it is held.
    """

    def __init__(
        self,
        *,
        max_calls: int | None = None,
        max_cost: float | None = None,
        calls: int = 0,
        cost: float = 0.0,
    ) -> None:
        self.max_calls = max_calls
        self.max_cost = max_cost
        self.calls = calls
        """Calls spent plus calls reserved by requests in flight (or leased out)."""
        self.cost = cost
        """Cost spent plus worst-case cost reserved by requests in flight (or leased out)."""
        self.held = NOTHING
        """What reservations in flight and leases out hold: it may come back."""
        self.holders = 0
        """How many reservations and leases hold part of the budget."""
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def limits_cost(self) -> bool:
        """Whether requests must reserve their worst-case cost (a ``max_cost`` is set)."""
        return self.max_cost is not None

    @property
    def free_calls(self) -> int | None:
        """Calls that can still be reserved; None when calls are not limited."""
        if self.max_calls is None:
            return None
        return max(0, self.max_calls - self.calls)

    @property
    def free_cost(self) -> float | None:
        """Cost that can still be reserved; None when cost is not limited."""
        if self.max_cost is None:
            return None
        return max(0.0, self.max_cost - self.cost)

    @property
    def exhausted(self) -> bool:
        calls_out = self.max_calls is not None and self.calls >= self.max_calls
        cost_out = self.max_cost is not None and self.cost >= self.max_cost - _COST_EPSILON
        return calls_out or cost_out

    def reserve(self, claim: Claim = ONE_CALL) -> Reservation:
        """Claim what one request may spend, or raise `BudgetExceededError` if it does not fit."""
        with self._lock:
            refusal = self._refusal(claim)
            if refusal is not None:
                raise refusal
            self._hold(claim)
        return Reservation(self, claim)

    async def areserve(self, claim: Claim = ONE_CALL) -> Reservation:
        """`reserve`, but a claim that does not fit only because of what requests in
        flight (or leases out) hold waits for them to settle, since a cache hit, a
        failure or an unused lease gives budget back. It is refused once it cannot
        fit even if everything held came back."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                refusal = self._refusal(claim)
                if refusal is None:
                    self._hold(claim)
                    return Reservation(self, claim)
                if self.holders == 0 or not self._fits_when_all_returns(claim):
                    raise refusal
                woken: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, woken))
            await woken

    def _fits_when_all_returns(self, claim: Claim) -> bool:
        calls = self.calls - self.held.calls + claim.calls
        cost = self.cost - self.held.cost + claim.cost
        calls_fit = self.max_calls is None or calls <= self.max_calls
        cost_fit = self.max_cost is None or cost <= self.max_cost + _COST_EPSILON
        return calls_fit and cost_fit

    def _hold(self, claim: Claim) -> None:
        # (under the lock)
        self.calls += claim.calls
        self.cost += claim.cost
        self.held = Claim(self.held.calls + claim.calls, self.held.cost + claim.cost)
        self.holders += 1

    def _return(self, held: Claim, spent: Claim) -> None:
        """``held`` comes back; ``spent`` of it is kept. Wakes reservations waiting for room."""
        with self._lock:
            self.calls += spent.calls - held.calls
            self.cost += spent.cost - held.cost
            self.held = Claim(self.held.calls - held.calls, max(0.0, self.held.cost - held.cost))
            self.holders -= 1
            waiters, self._waiters = self._waiters, []
        for loop, woken in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, woken)

    def _refusal(self, claim: Claim) -> BudgetExceededError | None:
        if self.max_calls is not None and self.calls + claim.calls > self.max_calls:
            return BudgetExceededError(self._calls_message(), needed=claim)
        if self.max_cost is not None and (
            self.cost + claim.cost > self.max_cost + _COST_EPSILON
            or self.cost >= self.max_cost - _COST_EPSILON
        ):
            return BudgetExceededError(self._cost_message(claim), needed=claim)
        return None

    # --- leases -------------------------------------------------------------------

    def grant(self, calls: int | None, cost: float | None) -> LeaseGrant | None:
        """Carve a lease of up to ``calls`` calls and ``cost`` USD out of what is free.

        Returns None when a limited dimension has nothing free. A dimension the
        run does not limit is granted unlimited (None) whatever was asked.
        """
        with self._lock:
            granted_calls: int | None = None
            granted_cost: float | None = None
            if self.max_calls is not None:
                free = self.max_calls - self.calls
                granted_calls = min(max(0, calls or 0), free)
                if granted_calls <= 0:
                    return None
            if self.max_cost is not None:
                free_cost = self.max_cost - self.cost
                granted_cost = min(max(0.0, cost or 0.0), free_cost)
                if granted_cost <= _COST_EPSILON:
                    return None
            self._hold(Claim(granted_calls or 0, granted_cost or 0.0))
        return LeaseGrant(granted_calls, granted_cost)

    def close(self, grant: LeaseGrant, spent: Claim) -> None:
        """A lease ended having spent ``spent``: keep that, take the rest back."""
        self._return(Claim(grant.calls or 0, grant.cost or 0.0), spent)

    def _calls_message(self) -> str:
        raise NotImplementedError

    def _cost_message(self, claim: Claim) -> str:
        raise NotImplementedError

    def _adjust(self, calls: int, cost: float) -> None:
        with self._lock:
            self.calls += calls
            self.cost += cost

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("_waiters", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._waiters = []


class CallBudget(_Ledger):
    """A run's budget: the one authority on what the run may still spend."""

    def __repr__(self) -> str:
        return (
            f"CallBudget(max_calls={self.max_calls}, max_cost={self.max_cost}, "
            f"calls={self.calls}, cost={self.cost:.6f})"
        )

    def check(self) -> None:
        """Raise `BudgetExceededError` if nothing more can be spent."""
        if self.exhausted:
            with self._lock:
                refusal = self._refusal(ONE_CALL)
            raise refusal or BudgetExceededError(self._calls_message())

    def charge(self, usage: Usage) -> None:
        """Count calls made where nothing reserved them (an evaluator that reports
        usage only afterwards); the limit can then be overshot by that work."""
        self._adjust(usage.calls, usage.cost or 0.0)

    def _calls_message(self) -> str:
        return (
            f"the run used its budget of {self.max_calls} LM calls "
            "(raise max_lm_calls= to let it go further)"
        )

    def _cost_message(self, claim: Claim) -> str:
        assert self.max_cost is not None
        return (
            f"the run spent its budget of ${self.max_cost:.4f}: ${self.cost:.4f} is spent or "
            f"reserved and the next request may cost up to ${claim.cost:.4f} "
            "(raise max_cost= to let it go further)"
        )


class BudgetLease(_Ledger):
    """A block of a run's budget spent in another process (see `CallBudget.grant`)."""

    def __init__(self, grant: LeaseGrant) -> None:
        super().__init__(max_calls=grant.calls, max_cost=grant.cost)
        self.grant = grant

    def spent(self) -> Claim:
        """What the lease has spent (including requests still in flight, counted whole)."""
        with self._lock:
            return Claim(self.calls, self.cost)

    def _calls_message(self) -> str:
        return (
            f"this worker's share of the run's LM budget ({self.max_calls} calls) is spent "
            "(max_lm_calls=)"
        )

    def _cost_message(self, claim: Claim) -> str:
        assert self.max_cost is not None
        return (
            f"this worker's share of the run's LM budget (${self.max_cost:.4f}) cannot cover "
            f"a request that may cost ${claim.cost:.4f} (max_cost=)"
        )


Budget = CallBudget | BudgetLease


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # its reservation may have been cancelled meanwhile
        woken.set_result(None)

_active: ContextVar[Budget | None] = ContextVar("dspex_call_budget", default=None)


def active_budget() -> Budget | None:
    return _active.get()


@contextmanager
def budget_scope(budget: Budget | None) -> Iterator[Budget | None]:
    token = _active.set(budget)
    try:
        yield budget
    finally:
        _active.reset(token)


__all__ = [
    "NOTHING",
    "ONE_CALL",
    "Budget",
    "BudgetLease",
    "CallBudget",
    "Claim",
    "LeaseGrant",
    "Reservation",
    "active_budget",
    "budget_scope",
]
