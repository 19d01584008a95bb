"""Module.batch on the runtime: fans out to EvalWorkers like Evaluate, results in order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.types import Usage
from dspex.errors import ParallelExecutionError, RemoteExampleError
from dspex.primitives.parallel import batch_runner
from dspex.runtime import seams

pytestmark = pytest.mark.ray


class Adder(dspex.Module):
    """Adds two numbers; raises for multiples of 11; says which process answered."""

    async def aforward(self, question: str) -> dspex.Prediction:
        a, b = (int(x) for x in question.split())
        if a % 11 == 0:
            raise ValueError(f"refusing {a}")
        prediction = dspex.Prediction(answer=str(a + b), pid=os.getpid())
        prediction.usage = Usage(prompt_tokens=a, completion_tokens=1, calls=1)
        return prediction


def examples(n: int) -> list[dspex.Example]:
    return [dspex.Example(question=f"{i} {i % 5}").with_inputs("question") for i in range(1, n + 1)]


@pytest.fixture
def runtime_seams(ray_cluster: Any) -> Iterator[None]:
    seams.install()
    try:
        yield
    finally:
        seams.uninstall()


def test_a_batch_fans_out_keeps_order_and_accounts_for_every_example(runtime_seams: None) -> None:
    assert batch_runner() is not None
    batch = examples(40)
    with dspex.track_usage() as tracker:
        results, failed, errors = Adder().batch(batch, max_errors=10, return_failed_examples=True)
    assert len(results) == 40
    for example, result in zip(batch, results, strict=True):
        a, b = (int(x) for x in example.question.split())
        assert (result is None) == (a % 11 == 0)
        if result is not None:
            assert result.answer == str(a + b)
    assert {r.pid for r in results if r is not None} - {os.getpid()}  # answered by workers
    assert [e.question for e in failed] == ["11 1", "22 2", "33 3"]
    assert all(isinstance(e, RemoteExampleError) and "refusing" in str(e) for e in errors)
    assert sum(v["calls"] for v in tracker.get_total_tokens().values()) == 37  # counted here once


def test_the_max_errors_th_failure_stops_a_remote_batch(runtime_seams: None) -> None:
    with pytest.raises(ParallelExecutionError, match="max_errors=2"):
        Adder().batch(examples(40), max_errors=2)


def test_without_the_runtime_a_batch_runs_in_this_process(ray_cluster: Any) -> None:
    assert batch_runner() is None
    results = Adder().batch(examples(5))
    assert {r.pid for r in results} == {os.getpid()}
