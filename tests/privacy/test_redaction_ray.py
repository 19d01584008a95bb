"""Redaction on Ray EvalWorkers: the ``redactors`` setting ships with the program, each
worker redacts the requests it makes, and the predictions that come back hold the real
values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RecordingServer, assert_none_in, pii_bytes

import dspex
from dspex.evaluate import Evaluate
from dspex.privacy import CREDIT_CARD, EMAIL, PHONE
from dspex.runtime.evaluation.ray_runner import EvalWorkerPool, shutdown_pool

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
