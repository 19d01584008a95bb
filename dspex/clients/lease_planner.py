"""Sizing the leases a fan-out takes from a run's budget (pure logic, no Ray).

An evaluation spread over workers sends each chunk of examples with a lease
(`CallBudget.grant`). The sizes decide two things: how often a chunk runs out
mid-way (too small) and how much budget sits idle in a slow worker's lease
while another worker needs it (too large). `LeasePlanner` asks for about
what a chunk should spend (the calls per example seen so far, with slack), and
never more than a fair share of what is free over every chunk that can be out
at once, so leases shrink as the budget nears its end and the last calls are
spread rather than stranded.

It also remembers the largest request a lease refused since the budget last
moved (`need`): a lease that cannot cover it is not worth sending, and when no
lease can, the fan-out is over (once chunks in flight have given back what they
did not use).
"""

from __future__ import annotations

import math

from dspex.clients.budget import NOTHING, Budget, Claim, LeaseGrant

CALLS_SLACK = 1.5
"""Leases ask for this many times the calls an example has needed so far."""


class LeasePlanner:
    """The leases of one fan-out over ``budget``; at most ``slots`` chunks out at once."""

    def __init__(self, budget: Budget, *, slots: int, calls_per_example: int = 1) -> None:
        self.budget = budget
        self.slots = max(1, slots)
        self.initial_calls_per_example = max(1, calls_per_example)
        self.need: Claim = NOTHING
        """The largest claim refused since the budget last moved."""
        self.examples_done = 0
        self.calls_spent = 0

    def calls_per_example(self) -> int:
        """What a lease plans per example: the mean seen so far with slack, or the first guess."""
        if self.examples_done == 0:
            return self.initial_calls_per_example
        mean = self.calls_spent / self.examples_done
        return max(1, math.ceil(mean * CALLS_SLACK))

    def lease(self, examples: int) -> LeaseGrant | None:
        """A lease for a chunk of ``examples``, or None if the budget cannot give one
        that covers the largest request refused so far."""
        budget = self.budget
        calls: int | None = None
        cost: float | None = None
        free_calls = budget.free_calls
        if free_calls is not None:
            fair = math.ceil(free_calls / self.slots)
            planned = self.calls_per_example() * max(1, examples)
            calls = max(self.need.calls, 1, min(planned, fair))
        free_cost = budget.free_cost
        if free_cost is not None:
            # No per-example estimate for cost: requests reserve their worst case,
            # far above what they spend, so a fair share of what is free it is.
            cost = max(self.need.cost, free_cost / self.slots)
        grant = budget.grant(calls, cost)
        if grant is None:
            return None
        if not self.need.fits_in(grant.calls, grant.cost):
            budget.close(grant, NOTHING)
            return None
        return grant

    def returned(
        self, grant: LeaseGrant, spent: Claim, *, examples_done: int, refused: list[Claim]
    ) -> None:
        """A chunk answered: its lease spent ``spent``; ``refused`` are the claims it
        could not cover (one per example stopped by the budget)."""
        self.budget.close(grant, spent)
        self.examples_done += examples_done
        self.calls_spent += spent.calls
        if spent.calls or spent.cost:
            self.need = NOTHING  # the budget moved: what was refused may fit elsewhere now
        for claim in refused:
            self.need = Claim(max(self.need.calls, claim.calls), max(self.need.cost, claim.cost))

    def lost(self, grant: LeaseGrant, spent: Claim | None = None) -> None:
        """A chunk never answered: its lease counts as spent whole, unless its worker
        said what it spent (its requests may have reached the LM)."""
        if spent is None:
            spent = Claim(grant.calls or 0, grant.cost or 0.0)
        self.budget.close(grant, spent)


__all__ = ["CALLS_SLACK", "LeasePlanner"]
