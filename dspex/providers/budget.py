"""Call budgets: a hard cap on LM calls and cost for everything inside a run.

An optimizer run installs a `CallBudget` in a context variable; every predictor
call inside it (any task, any thread that copied the context) reserves a call
before reaching the LM and refunds what a cache hit did not spend. When the
budget is used up the next reservation raises `BudgetExceededError`, which the
run turns into a clean stop with the best program so far.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from dspex.errors import BudgetExceededError
from dspex.providers.types import Usage


@dataclass
class CallBudget:
    max_calls: int | None = None
    max_cost: float | None = None
    calls: int = 0
    cost: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self) -> None:
        """Claim one LM call, or raise if the budget is spent."""
        with self._lock:
            if self.max_calls is not None and self.calls >= self.max_calls:
                raise BudgetExceededError(
                    f"the run used its budget of {self.max_calls} LM calls "
                    "(raise max_lm_calls= to let it go further)"
                )
            if self.max_cost is not None and self.cost >= self.max_cost:
                raise BudgetExceededError(
                    f"the run spent its budget of ${self.max_cost:.4f} "
                    "(raise max_cost= to let it go further)"
                )
            self.calls += 1

    def settle(self, usage: Usage) -> None:
        """Replace the reserved call by what the request really used (0 calls on a cache hit)."""
        with self._lock:
            self.calls += usage.calls - 1
            self.cost += usage.cost or 0.0

    def charge(self, usage: Usage) -> None:
        """Count calls made elsewhere (on EvalWorkers) that never reserved here."""
        with self._lock:
            self.calls += usage.calls
            self.cost += usage.cost or 0.0

    def release(self) -> None:
        """Give back a reservation whose request never reached the LM."""
        with self._lock:
            self.calls -= 1

    @property
    def exhausted(self) -> bool:
        calls_out = self.max_calls is not None and self.calls >= self.max_calls
        cost_out = self.max_cost is not None and self.cost >= self.max_cost
        return calls_out or cost_out

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_active: ContextVar[CallBudget | None] = ContextVar("dspex_call_budget", default=None)


def active_budget() -> CallBudget | None:
    return _active.get()


@contextmanager
def budget_scope(budget: CallBudget | None) -> Iterator[CallBudget | None]:
    token = _active.set(budget)
    try:
        yield budget
    finally:
        _active.reset(token)
