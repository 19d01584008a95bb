"""Budgets and leases without Ray: reserve before sending, exact under concurrency."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import dspex
from dspex.clients.budget import (
    NOTHING,
    BudgetLease,
    CallBudget,
    Claim,
    LeaseGrant,
    budget_scope,
)
from dspex.clients.cache import LMCache
from dspex.clients.lease_planner import LeasePlanner
from dspex.clients.pricing import prompt_token_bound, worst_case_cost
from dspex.errors import BudgetExceededError
from dspex.simlm import SimTransport


async def test_many_tasks_reserving_at_once_send_exactly_the_budget() -> None:
    budget = CallBudget(max_calls=37)
    sent = 0

    async def request() -> None:
        nonlocal sent
        reservation = await budget.areserve(Claim(1, 0.0))
        await asyncio.sleep(0)  # in flight while the others reserve
        sent += 1
        reservation.settle(Claim(1, 0.0))

    results = await asyncio.gather(*(request() for _ in range(200)), return_exceptions=True)

    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert sent == 37 == budget.calls and len(refused) == 200 - 37
    assert budget.holders == 0 and budget.held == NOTHING


def test_threads_reserving_at_once_never_pass_the_budget() -> None:
    budget = CallBudget(max_calls=500)
    sent = 0
    count_lock = threading.Lock()

    def request() -> bool:
        nonlocal sent
        try:
            reservation = budget.reserve(Claim(1, 0.0))
        except BudgetExceededError:
            return False
        with count_lock:
            sent += 1
        reservation.settle(Claim(1, 0.0))
        return True

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: request(), range(2000)))

    assert sent == sum(answers) == 500 == budget.calls


async def test_a_cost_claim_reserves_the_worst_case_then_settles_to_the_actual() -> None:
    budget = CallBudget(max_cost=1.0)
    first = await budget.areserve(Claim(1, 0.6))
    with pytest.raises(BudgetExceededError, match="may cost up to"):
        budget.reserve(Claim(1, 0.6))  # the worst cases would pass $1 together
    first.settle(Claim(1, 0.1))  # it cost far less than its worst case
    assert budget.cost == pytest.approx(0.1)
    second = budget.reserve(Claim(1, 0.6))  # now it fits
    second.release()  # a cache hit: nothing spent, everything back
    assert (budget.calls, budget.cost) == (1, pytest.approx(0.1))


async def test_a_reservation_waits_for_what_requests_in_flight_may_give_back() -> None:
    budget = CallBudget(max_cost=1.0)
    in_flight = await budget.areserve(Claim(1, 0.8))
    waiting = asyncio.ensure_future(budget.areserve(Claim(1, 0.5)))
    await asyncio.sleep(0)
    assert not waiting.done()  # it would fit if the request in flight costs less than its worst
    in_flight.settle(Claim(1, 0.3))
    reservation = await asyncio.wait_for(waiting, 5)
    assert budget.cost == pytest.approx(0.8)
    # Spent alone leaves no room: refused at once, not parked forever.
    reservation.settle(Claim(1, 0.5))
    with pytest.raises(BudgetExceededError):
        await asyncio.wait_for(budget.areserve(Claim(1, 0.5)), 5)


def test_settling_twice_counts_once() -> None:
    budget = CallBudget(max_calls=3)
    reservation = budget.reserve()
    reservation.settle(Claim(1, 0.0))
    reservation.release()
    assert budget.calls == 1


# --- leases ---------------------------------------------------------------------------


def test_leases_come_out_of_what_is_free_and_give_back_what_they_did_not_use() -> None:
    budget = CallBudget(max_calls=10, max_cost=1.0)
    grant = budget.grant(6, 0.7)
    assert grant == LeaseGrant(6, 0.7)
    assert budget.grant(6, 0.7) == LeaseGrant(4, pytest.approx(0.3))  # only what is left
    assert budget.grant(1, 0.1) is None
    with pytest.raises(BudgetExceededError):
        budget.reserve(Claim(1, 0.0))
    budget.close(grant, Claim(2, 0.25))  # the lease spent 2 calls, $0.25
    assert budget.free_calls == 4 and budget.free_cost == pytest.approx(0.45)


def test_a_lease_spends_locally_and_refuses_with_the_claim_it_needed() -> None:
    lease = BudgetLease(LeaseGrant(calls=2, cost=None))
    lease.reserve().settle(Claim(1, 0.0))
    lease.reserve().settle(Claim(1, 0.0))
    with pytest.raises(BudgetExceededError) as refused:
        lease.reserve(Claim(1, 0.0))
    assert refused.value.needed == Claim(1, 0.0)
    assert lease.spent() == Claim(2, 0.0)


def test_workers_spending_leases_in_threads_never_pass_the_run_budget() -> None:
    budget = CallBudget(max_calls=300)
    sent = 0
    count_lock = threading.Lock()

    def worker() -> None:
        nonlocal sent
        while (grant := budget.grant(7, None)) is not None:
            lease = BudgetLease(grant)
            while True:
                try:
                    reservation = lease.reserve()
                except BudgetExceededError:
                    break
                with count_lock:
                    sent += 1
                reservation.settle(Claim(1, 0.0))
            budget.close(grant, lease.spent())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == 300 == budget.calls and budget.holders == 0


def test_the_planner_shrinks_leases_as_the_budget_ends_and_covers_what_was_refused() -> None:
    budget = CallBudget(max_calls=40)
    planner = LeasePlanner(budget, slots=4, calls_per_example=2)
    first = planner.lease(examples=4)
    assert first == LeaseGrant(8, None)  # 2 calls x 4 examples, under the fair share (10)
    planner.returned(first, Claim(8, 0.0), examples_done=4, refused=[])
    # 32 free over 4 slots: a fair share of 8; then 6 of the 24 left, and so on.
    leases = [planner.lease(examples=16) for _ in range(3)]
    assert [lease.calls for lease in leases if lease] == [8, 6, 5]
    for lease in leases:
        assert lease is not None
        planner.returned(lease, NOTHING, examples_done=0, refused=[Claim(3, 0.0)])
    assert planner.need == Claim(3, 0.0)
    # A lost chunk counts whole: its requests may have reached the LM.
    lost = planner.lease(examples=1)
    assert lost is not None and lost.calls is not None and lost.calls >= 3
    planner.lost(lost)
    assert budget.calls == 8 + lost.calls


def test_the_planner_gives_no_lease_that_cannot_cover_the_request_refused() -> None:
    budget = CallBudget(max_cost=1.0)
    planner = LeasePlanner(budget, slots=2)
    grant = planner.lease(examples=2)
    assert grant == LeaseGrant(None, 0.5)
    planner.returned(grant, Claim(1, 0.7), examples_done=1, refused=[Claim(1, 0.4)])
    assert planner.lease(examples=1) is None  # $0.30 free cannot cover a $0.40 request
    assert budget.holders == 0 and budget.cost == pytest.approx(0.7)


# --- worst cases ------------------------------------------------------------------------


def test_the_prompt_bound_is_never_below_what_the_simulated_lm_bills() -> None:
    messages = [
        {"role": "system", "content": "Answer the question. " * 20},
        {"role": "user", "content": "Qu'est-ce que 2 + 2 ? \u00e9\u00e8 " * 7},
    ]
    billed = sum((len(m["content"]) + 3) // 4 + 3 for m in messages)  # the simulator's count
    assert prompt_token_bound(messages, {}) >= billed
    assert worst_case_cost((1.0, 2.0), messages, {}, max_tokens=100, completions=3) == pytest.approx(
        (prompt_token_bound(messages, {}) * 1.0 + 300 * 2.0) / 1e6
    )


async def test_a_cache_hit_reserves_nothing_and_runs_on_a_spent_budget(
    isolated_cache: LMCache,
) -> None:
    sim = SimTransport(seed=0)
    lm = dspex.LM("openai/sim-lm", api_base=sim.url, transport=sim)
    budget = CallBudget(max_calls=1)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    with budget_scope(budget):
        first = await lm.acomplete(messages)
        again = await lm.acomplete(messages)  # the budget is spent; the cache is free
        with pytest.raises(BudgetExceededError):
            await lm.acomplete([{"role": "user", "content": "What is 7 + 1?"}])
    assert again.cached and again.outputs == first.outputs
    assert budget.calls == 1 and sim.stats()["total"] == 1
