"""The Ray runner: same result as in-process, runner choice, error limit, 100k streaming."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.types import Usage
from dspex.errors import EvaluationError
from dspex.evaluate import Evaluate
from dspex.evaluate.runner import run_local
from dspex.runtime import seams
from dspex.runtime.evaluation.ray_runner import (
    DispatchStats,
    EvalWorkerPool,
    RunOptions,
    run_ray,
    shutdown_pool,
)
from dspex.simlm import datasets, start_sim_lm

pytestmark = pytest.mark.ray


def devset(n: int) -> list[dspex.Example]:
    return [
        dspex.Example(question=f"{i} {i % 7}", answer=str(i + i % 7)).with_inputs("question")
        for i in range(n)
    ]


def exact(example: Any, pred: Any) -> bool:
    return example.answer == pred.answer


class Adder(dspex.Module):
    """Adds two numbers; wrong for multiples of 3, raises for multiples of 11."""

    async def aforward(self, question: str) -> dspex.Prediction:
        a, b = (int(x) for x in question.split())
        if a % 11 == 0:
            raise ValueError(f"refusing {a}")
        pred = dspex.Prediction(answer=str(a + b if a % 3 else a - b), pid=os.getpid())
        pred.usage = Usage(prompt_tokens=a, completion_tokens=1, calls=1)
        return pred


class SyncAdder(dspex.Module):
    """The same, forward-only: runs in the worker's thread pool."""

    def forward(self, question: str) -> dspex.Prediction:
        a, b = (int(x) for x in question.split())
        if a % 11 == 0:
            raise ValueError(f"refusing {a}")
        return dspex.Prediction(answer=str(a + b if a % 3 else a - b))


class Recorder:
    """A Progress that counts what it is told."""

    def __init__(self) -> None:
        self.done = 0
        self.errors = 0
        self.calls = 0

    def start(self, total: int | None) -> None:
        pass

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        self.done += 1
        self.errors += error
        self.calls += usage.calls if usage is not None else 0

    def close(self) -> None:
        pass


def summary(result: Any) -> list[tuple[Any, ...]]:
    return [(ex, pred.get("answer"), score) for ex, pred, score in result.results]


@pytest.fixture(scope="module")
def pool(ray_cluster: Any) -> Iterator[EvalWorkerPool]:
    pool = EvalWorkerPool()
    yield pool
    pool.shutdown()
    shutdown_pool()  # the default pool Evaluate(runner="ray") used


@pytest.mark.parametrize("program", [Adder(), SyncAdder()], ids=["async", "sync"])
def test_same_result_as_in_process(program: dspex.Module, pool: EvalWorkerPool) -> None:
    data = devset(120)
    options: dict[str, Any] = {"num_threads": 8, "max_errors": 50, "failure_score": 0.25}

    local = Evaluate(devset=data, metric=exact, runner="local", **options)(program)
    remote = Evaluate(devset=data, metric=exact, runner="ray", **options)(program)

    assert local.n_errors == 11  # 0, 11, ..., 110
    assert remote.score == local.score
    assert summary(remote) == summary(local)
    # Failures come in devset order (in-process: in completion order).
    assert [(e.index, e.error_type, e.message) for e in remote.errors] == sorted(
        (e.index, e.error_type, e.message) for e in local.errors
    )
    assert remote.usage == local.usage
    if isinstance(program, Adder):
        pids = {pred.pid for _, pred, _ in remote.results if "pid" in pred}
        assert pids and os.getpid() not in pids


async def test_two_workers_small_chunks_match_in_process(pool: EvalWorkerPool) -> None:
    data = devset(150)
    options = RunOptions(num_threads=8, max_errors=None)
    local = await run_local(Adder(), exact, data, options)
    progress, stats = Recorder(), DispatchStats()

    remote = await run_ray(
        Adder(), exact, data, options, progress, workers=2, chunk_size=3, pool=pool, stats=stats
    )

    assert [row[0] for row in remote.results] == data
    assert [row[2] for row in remote.results] == [row[2] for row in local.results]
    assert [f.index for f in remote.failures] == sorted(f.index for f in local.failures)
    assert (progress.done, progress.errors) == (150, len(local.failures))
    assert progress.calls == remote.usage.calls == local.usage.calls  # type: ignore[union-attr]
    assert stats.chunks_sent == 50 and stats.workers == 2
    assert stats.max_outstanding <= 2 * stats.max_outstanding_per_worker


def test_through_the_simulated_lm_matches_in_process(pool: EvalWorkerPool) -> None:
    rows = datasets.load("arithmetic", "dev")[:30]
    data = [
        dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question")
        for r in rows
    ]
    program = dspex.Predict("question -> answer: int")
    with start_sim_lm(seed=3, latency_ms=0) as server:
        lm = dspex.LM("openai/sim-1", api_base=server.url, api_key="x", cache=False)
        options: dict[str, Any] = {"metric": dspex.answer_exact_match, "num_threads": 8}
        with dspex.context(lm=lm):
            local = Evaluate(devset=data, runner="local", **options)(program)
            remote = Evaluate(devset=data, runner="ray", **options)(program)
        completions = server.stats()["completions"]

    assert 0 < local.score < 100  # the oracle gets some wrong: the comparison means something
    assert remote.score == local.score
    assert summary(remote) == summary(local)
    assert remote.usage == local.usage and remote.usage is not None
    assert remote.usage.calls == 30 and completions == 60


def test_the_runtime_installs_the_ray_runner_as_the_default(pool: EvalWorkerPool) -> None:
    data = [ex for ex in devset(12) if int(ex.question.split()[0]) % 11]
    seams.install()  # what dspex.init() does once the tree is up
    try:
        chosen = Evaluate(devset=data, metric=exact)(Adder())
        forced = Evaluate(devset=data, metric=exact, runner="local")(Adder())
    finally:
        seams.uninstall()
    after = Evaluate(devset=data, metric=exact)(Adder())

    assert os.getpid() not in {pred.pid for _, pred, _ in chosen.results}
    assert {pred.pid for _, pred, _ in forced.results} == {os.getpid()}
    assert chosen.score == forced.score
    assert {pred.pid for _, pred, _ in after.results} == {os.getpid()}  # local again


def test_an_unknown_runner_is_refused() -> None:
    with pytest.raises(dspex.ConfigurationError, match="runner"):
        Evaluate(devset=[], metric=exact, runner="dask")


async def test_max_errors_stops_the_run_and_cancels_outstanding_chunks(
    pool: EvalWorkerPool,
) -> None:
    class Flaky(dspex.Module):
        async def aforward(self, question: str) -> dspex.Prediction:
            a = int(question.split()[0])
            if a % 2 == 0:
                raise RuntimeError(f"flaky {a}")
            return dspex.Prediction(answer=str(a))

    data = devset(2000)
    options = RunOptions(num_threads=8, max_errors=5)
    stats = DispatchStats()

    with pytest.raises(EvaluationError) as remote:
        await run_ray(Flaky(), exact, data, options, workers=2, pool=pool, stats=stats)
    with pytest.raises(EvaluationError) as local:
        await run_local(Flaky(), exact, data, options)

    assert "more than max_errors=5" in str(remote.value)
    assert str(remote.value).splitlines()[0] == str(local.value).splitlines()[0]
    assert len(remote.value.failures) >= 6
    assert "RuntimeError: flaky" in str(remote.value.failures[0][1])
    # Stopped early: only the first few chunks were ever sent.
    assert stats.chunks_sent * stats.chunk_size < 200


async def test_a_100k_devset_streams_with_bounded_outstanding_chunks(
    pool: EvalWorkerPool,
) -> None:
    class Echo:
        async def acall(self, question: str) -> dspex.Prediction:
            return dspex.Prediction(answer=question)

    size = 100_000
    read = 0

    def examples() -> Iterator[dspex.Example]:
        nonlocal read
        for i in range(size):
            read += 1
            yield dspex.Example(question=str(i), answer=str(i) if i % 4 else "x").with_inputs(
                "question"
            )

    class AheadCheck(Recorder):
        """Records how far the devset was read ahead of finished examples."""

        ahead = 0

        def advance(self, score: float, usage: Usage | None, error: bool) -> None:
            super().advance(score, usage, error)
            self.ahead = max(self.ahead, read - self.done)

    progress, stats = AheadCheck(), DispatchStats()
    options = RunOptions(num_threads=64, max_errors=None)

    outcome = await run_ray(
        Echo(),
        exact,
        examples(),
        options,
        progress,
        workers=2,
        chunk_size=32,
        pool=pool,
        stats=stats,
    )

    assert len(outcome.results) == size and not outcome.failures
    assert [row[0].question for row in outcome.results[:3]] == ["0", "1", "2"]
    assert outcome.results[-1][0].question == str(size - 1)
    assert sum(row[2] for row in outcome.results) == size * 3 // 4
    assert progress.done == size
    bound = stats.workers * stats.max_outstanding_per_worker
    assert stats.max_outstanding <= bound == 2 * 2
    # Streaming: never more examples read than fit in the outstanding chunks.
    assert progress.ahead <= bound * stats.chunk_size


async def test_an_unpicklable_program_is_refused_with_what_to_do(pool: EvalWorkerPool) -> None:
    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        async def acall(self, question: str) -> dspex.Prediction:
            return dspex.Prediction(answer=question)

    options = RunOptions(num_threads=2, max_errors=None)
    with pytest.raises(dspex.ConfigurationError, match="runner='local'"):
        await run_ray(Locked(), exact, devset(3), options, pool=pool)


async def test_the_ray_runner_without_ray_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    options = RunOptions(num_threads=2, max_errors=None)
    with pytest.raises(dspex.ConfigurationError, match=r"dspex.runtime.init\(\)"):
        await run_ray(Adder(), exact, devset(3), options)
