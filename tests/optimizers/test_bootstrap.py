"""BootstrapFewShot on the simulated LM: demos from passing traces, parallel = serial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.optimizers import BootstrapFewShot
from dspex.optimizers.run_store import RunStore
from dspex.simlm import datasets

GOLD = {row["question"]: str(row["answer"]) for row in datasets.load("arithmetic", "train")}


def counting(metric: Callable[..., Any]) -> tuple[Callable[..., Any], list[str]]:
    """The metric, recording the question of every call."""
    seen: list[str] = []

    def wrapped(example: Any, prediction: Any, trace: Any = None) -> Any:
        seen.append(example.question)
        return metric(example, prediction, trace)

    return wrapped, seen


def augmented(program: Any) -> list[dspex.Example]:
    return [d for d in program.predict.demos if d.get("augmented")]


def test_demos_come_from_passing_traces(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    compiled = BootstrapFewShot(metric=exact, max_bootstrapped_demos=4, max_labeled_demos=4).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    demos = augmented(compiled)
    assert len(demos) == 4
    for demo in demos:
        assert demo.answer == GOLD[demo.question]  # only traces the metric passed
        assert demo.reasoning  # the trace's full output, reasoning included
    assert compiled._compiled is True


def test_compiled_chain_of_thought_beats_zero_shot(
    lm: Any, train: list[dspex.Example], dev: list[dspex.Example], exact: Any
) -> None:
    student = dspex.ChainOfThought("question -> answer")
    compiled = BootstrapFewShot(metric=exact, max_bootstrapped_demos=4, max_labeled_demos=0).compile(
        student, trainset=train
    )
    evaluate = Evaluate(devset=dev, metric=exact, num_threads=16)
    zero_shot, tuned = evaluate(student).score, evaluate(compiled).score
    assert tuned >= zero_shot + 15, (zero_shot, tuned)


@pytest.mark.parametrize("rounds", [1, 2])
def test_parallel_result_equals_serial_result(lm: Any, train: list[dspex.Example], exact: Any, rounds: int) -> None:
    def compile_with(threads: int) -> dict[str, Any]:
        optimizer = BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=4, max_labeled_demos=8, max_rounds=rounds, num_threads=threads
        )
        state: dict[str, Any] = optimizer.compile(dspex.ChainOfThought("question -> answer"), trainset=train).dump_state()
        return state

    assert compile_with(1) == compile_with(8)


def test_stops_like_the_serial_loop_with_bounded_waste(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    serial_metric, serial_seen = counting(exact)
    BootstrapFewShot(metric=serial_metric, max_labeled_demos=0, num_threads=1).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    parallel_metric, parallel_seen = counting(exact)
    BootstrapFewShot(metric=parallel_metric, max_labeled_demos=0, num_threads=4).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    assert len(serial_seen) < len(train)  # it stopped early
    assert set(serial_seen) <= set(parallel_seen)
    assert len(parallel_seen) <= len(serial_seen) + 3  # at most num_threads - 1 runs wasted


def test_labeled_fill_excludes_bootstrapped_examples(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    compiled = BootstrapFewShot(metric=exact, max_bootstrapped_demos=3, max_labeled_demos=8).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    demos = compiled.predict.demos
    boot = [d.question for d in demos if d.get("augmented")]
    labeled = [d.question for d in demos if not d.get("augmented")]
    assert len(boot) == 3 and len(labeled) == 5
    assert not set(boot) & set(labeled)
    assert set(labeled) <= {e.question for e in train}


class Recorder(dspex.Module):
    """A CoT-shaped program that fails on chosen questions."""

    def __init__(self, fail_on: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> reasoning, answer")
        self.fail_on = fail_on

    async def aforward(self, question: str) -> Any:
        if question in self.fail_on:
            raise RuntimeError(f"no answer for {question}")
        return await self.predict.acall(question=question)


def test_each_teacher_run_hides_its_own_example(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    seen: list[bool] = []

    class Spy(Recorder):
        async def aforward(self, question: str) -> Any:
            seen.append(any(d.question == question for d in self.predict.demos))
            return await self.predict.acall(question=question)

    teacher = Spy()
    teacher.predict.demos = list(train[:10])
    teacher._compiled = True
    BootstrapFewShot(metric=exact, max_bootstrapped_demos=20, max_labeled_demos=0, num_threads=4).compile(
        Spy(), trainset=train[:12], teacher=teacher
    )
    assert len(seen) == 12 and not any(seen)


def test_errors_count_against_max_errors(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    failing = frozenset(e.question for e in train[:3])
    tolerant = BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, max_errors=4)
    compiled = tolerant.compile(Recorder(), trainset=train, teacher=Recorder(failing))
    assert not {d.question for d in compiled.predict.demos} & failing
    # As in DSPy, the max_errors-th failure stops the compile with the teacher's own error.
    strict = BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0, max_errors=3)
    with pytest.raises(RuntimeError, match="no answer for") as info:
        strict.compile(Recorder(), trainset=train, teacher=Recorder(failing))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "3 teacher runs failed, reaching max_errors=3" in notes and notes.count("RuntimeError") == 3


def test_metric_threshold_filters_traces(lm: Any, train: list[dspex.Example]) -> None:
    def graded(example: Any, prediction: Any, trace: Any = None) -> float:
        return 0.5 if str(prediction.answer) == example.answer else 0.0

    lenient = BootstrapFewShot(metric=graded, metric_threshold=0.5, max_labeled_demos=0).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    strict = BootstrapFewShot(metric=graded, metric_threshold=0.9, max_labeled_demos=0).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    assert len(augmented(lenient)) == 4
    assert augmented(strict) == []


def test_later_rounds_sample_afresh(lm: Any, train: list[dspex.Example]) -> None:
    def never(example: Any, prediction: Any, trace: Any = None) -> bool:
        return False

    BootstrapFewShot(metric=never, max_labeled_demos=0, max_rounds=3, num_threads=1).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train[:2]
    )
    params = [entry["params"] for entry in lm.history]
    assert len(params) == 6  # 2 examples x 3 rounds
    assert [(p.get("temperature"), p.get("seed"), p.get("rollout_id")) for p in params[:3]] == [
        (None, None, None),
        (1.0, 1, 1),
        (1.0, 2, 2),
    ]


def test_no_metric_accepts_every_trace(lm: Any, train: list[dspex.Example]) -> None:
    compiled = BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=0).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    assert [d.question for d in compiled.predict.demos] == [e.question for e in train[:3]]


def test_student_untouched_compiled_student_and_mismatched_teacher_rejected(
    lm: Any, train: list[dspex.Example], exact: Any
) -> None:
    student = dspex.ChainOfThought("question -> answer")
    compiled = BootstrapFewShot(metric=exact).compile(student, trainset=train)
    assert student.predict.demos == [] and compiled.predict.demos
    with pytest.raises(ConfigurationError, match="already compiled"):
        BootstrapFewShot(metric=exact).compile(compiled, trainset=train)
    with pytest.raises(ConfigurationError, match="teacher"):
        BootstrapFewShot(metric=exact).compile(student, trainset=train, teacher=dspex.Predict("question -> answer"))


def test_a_second_compile_with_the_same_run_id_replays(
    lm: Any, train: list[dspex.Example], exact: Any, store: RunStore, sim: Any
) -> None:
    optimizer = BootstrapFewShot(metric=exact, max_labeled_demos=4)
    first = optimizer.compile(dspex.ChainOfThought("question -> answer"), trainset=train, run_id="b1", store=store)
    calls_before = sim.stats()["total"]
    again = optimizer.compile(dspex.ChainOfThought("question -> answer"), trainset=train, run_id="b1", store=store)
    assert sim.stats()["total"] == calls_before  # no LM call: every example's step replayed
    assert again.run_info.replayed_steps > 0
    assert again.dump_state() == first.dump_state()


async def test_limiter_serves_the_lowest_priority_first_and_survives_cancellation() -> None:
    import asyncio

    from dspex.optimizers.bootstrap import Limiter

    limiter = Limiter(1)
    order: list[int] = []
    arrived: list[int] = []
    all_queued = asyncio.Event()
    await limiter.acquire((0,))  # the only slot is taken: everyone below queues

    async def take(priority: int) -> None:
        arrived.append(priority)
        if len(arrived) == 5:
            all_queued.set()
        # acquire() queues this waiter before yielding: once the fifth has run this far,
        # all five are in the queue.
        async with limiter.slot((priority,)):
            order.append(priority)

    waiting = [asyncio.ensure_future(take(p)) for p in (5, 3, 9, 1)]
    doomed = asyncio.ensure_future(take(0))
    await all_queued.wait()
    doomed.cancel()
    limiter.release()
    await asyncio.gather(*waiting)
    assert order == [1, 3, 5, 9]
    # Cancelled waiters leave no stale entry that would block the next acquirer.
    await asyncio.wait_for(take(7), 5)
    assert order[-1] == 7


def test_teacher_settings_route_teacher_runs_to_another_lm(
    lm: Any, sim: Any, train: list[dspex.Example], exact: Any
) -> None:
    from dspex.simlm import SimTransport

    teacher_sim = SimTransport(seed=1)
    teacher_lm = dspex.LM("openai/teacher", api_base=teacher_sim.url, transport=teacher_sim, cache=False)
    compiled = BootstrapFewShot(metric=exact, teacher_settings={"lm": teacher_lm}, max_labeled_demos=0).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train
    )
    assert len(augmented(compiled)) == 4
    assert teacher_sim.stats()["total"] >= 4
    assert sim.stats()["total"] == 0  # the student's LM was not used for bootstrapping


def test_budget_stop_during_bootstrap(lm: Any, train: list[dspex.Example], exact: Any, store: RunStore) -> None:
    student = dspex.ChainOfThought("question -> answer")
    compiled = BootstrapFewShot(metric=exact, max_labeled_demos=0, num_threads=1).compile(
        student, trainset=train, max_lm_calls=2, run_id="budget", store=store
    )
    assert compiled.run_info.budget_limited is True
    assert compiled.run_info.lm_calls == 2
    assert compiled is not student and compiled.predict.demos == []
