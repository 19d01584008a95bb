"""Redaction on Ray: on EvalWorkers the ``redactors`` setting ships with the program, each
worker redacts the requests it makes, and the predictions that come back hold the real
values; through the provider pools (lease and stream modes) the driver redacts before a
request goes to the pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from privacy_helpers import RecordingServer, assert_none_in, pii_bytes

import dspex
from dspex import runtime
from dspex.clients.dispatch import current_dispatcher
from dspex.evaluate import Evaluate
from dspex.privacy import CREDIT_CARD, EMAIL, PHONE
from dspex.runtime.evaluation.ray_runner import EvalWorkerPool, shutdown_pool
from dspex.runtime.pools.pool_client import enable_pools, routing_mode

pytestmark = pytest.mark.ray

PEOPLE = [
    ("ann@example.com", "+1 (415) 555-0101", "4111 1111 1111 1111"),
    ("bob@example.org", "+44 20 7946 0958", "5555 5555 5555 4444"),
    ("cy@example.net", "415-555-0199", "3782 822463 10005"),
    ("di@example.io", "+33 6 12 34 56 78", "6011 1111 1111 1117"),
]


@pytest.fixture(scope="module")
def pool(ray_cluster: Any) -> Iterator[EvalWorkerPool]:
    workers = EvalWorkerPool()
    yield workers
    workers.shutdown()
    shutdown_pool()


def restored(example: Any, prediction: Any) -> bool:
    return prediction.reply == f"seen: {example.email} {example.phone} {example.card}"


def test_an_evaluation_on_eval_workers_sends_no_personal_data(
    pool: EvalWorkerPool, server: RecordingServer
) -> None:
    devset = [
        dspex.Example(message=f"I am {e}, phone {p}, card {c}", email=e, phone=p, card=c).with_inputs("message")
        for e, p, c in PEOPLE
    ]
    lm = dspex.LM("openai/test-model", api_base=server.base_url, api_key="k", cache=False, num_retries=0)
    with dspex.context(lm=lm, redactors=[EMAIL, PHONE, CREDIT_CARD]):
        result = Evaluate(devset=devset, metric=restored, runner="ray", num_threads=2)(
            dspex.Predict("message -> reply")
        )

    assert len(server.raw) == len(PEOPLE)
    assert_none_in(server.everything_received, pii_bytes(*[v for person in PEOPLE for v in person]))
    assert result.score == 100.0
    assert sorted(pred.reply for _, pred, _ in result.results) == sorted(
        f"seen: {e} {p} {c}" for e, p, c in PEOPLE
    )


@pytest.fixture(scope="module")
def tree(ray_cluster: Any, pool: EvalWorkerPool) -> Iterator[Any]:
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        yield ray_cluster
    finally:
        runtime.shutdown(stop_tree=True)


@pytest.mark.parametrize("mode", ["lease", "stream"])
async def test_requests_through_the_provider_pools_are_redacted_before_they_leave(
    tree: Any, server: RecordingServer, mode: str
) -> None:
    enable_pools(mode=mode)  # type: ignore[arg-type]
    try:
        assert current_dispatcher() is not None and routing_mode() == mode
        email, phone, card = PEOPLE[0]
        lm = dspex.LM("openai/test-model", api_base=server.base_url, api_key="k", cache=False, num_retries=0)
        with dspex.context(lm=lm, redactors=[EMAIL, PHONE, CREDIT_CARD]):
            prediction = await dspex.Predict("message -> reply").acall(message=f"{email} {phone} {card}")
    finally:
        enable_pools(mode="lease")
    assert prediction.reply == f"seen: {email} {phone} {card}"
    assert len(server.raw) == 1
    assert_none_in(server.everything_received, pii_bytes(email, phone, card))
