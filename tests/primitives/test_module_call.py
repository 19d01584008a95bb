from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from dspex.clients.types import Usage
from dspex.primitives import (
    Module,
    Prediction,
    collect_usage,
    context,
    record_usage,
    settings,
)

from .fakes import EchoPredict, caller_names


class SyncOnly(Module):
    def __init__(self) -> None:  # no super().__init__(): must still work
        self.calls: list[tuple[str, Any, str]] = []

    def forward(self, question: str) -> Prediction:
        self.calls.append(("forward", settings.lm, threading.current_thread().name))
        return Prediction(answer=question.upper())


class AsyncOnly(Module):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def aforward(self, question: str) -> Prediction:
        self.calls.append(("aforward", settings.lm))
        return Prediction(answer=question[::-1])


class Both(Module):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []

    def forward(self, question: str) -> Prediction:
        self.calls.append(("forward", settings.lm, threading.current_thread().name))
        return Prediction(answer="sync")

    async def aforward(self, question: str) -> Prediction:
        self.calls.append(("aforward", settings.lm, threading.current_thread().name))
        return Prediction(answer="async")


class OverridesForward(Both):
    """A user subclass overriding only forward of a class that defines both."""

    def forward(self, question: str) -> Prediction:
        return Prediction(answer="override")


class AddsAforward(SyncOnly):
    """A subclass adding an async path to a sync-only parent."""

    async def aforward(self, question: str) -> Prediction:
        self.calls.append(("aforward", settings.lm, threading.current_thread().name))
        return Prediction(answer="async")


class Neither(Module):
    pass


def test_base_attributes_exist_without_super_init() -> None:
    module = SyncOnly()
    assert module.callbacks == [] and module._compiled is False
    assert Module(callbacks=["cb"]).callbacks == ["cb"]


def test_forward_only_sync_call() -> None:
    module = SyncOnly()
    with context(lm="ctx-lm"):
        assert module(question="hi").answer == "HI"
    assert module.calls == [("forward", "ctx-lm", threading.current_thread().name)]


async def test_forward_only_acall_runs_forward_in_a_worker_thread_with_context() -> None:
    module = SyncOnly()
    with context(lm="ctx-lm"):
        pred = await module.acall(question="hi")
    assert pred.answer == "HI"
    [(kind, lm, thread_name)] = module.calls
    assert (kind, lm) == ("forward", "ctx-lm")
    assert thread_name != threading.current_thread().name


def test_aforward_only_sync_call_runs_on_the_background_loop_with_context() -> None:
    module = AsyncOnly()
    with context(lm="ctx-lm"):
        assert module("abc").answer == "cba"  # positional args pass through
    assert module.calls == [("aforward", "ctx-lm")]


async def test_aforward_only_acall() -> None:
    module = AsyncOnly()
    with context(lm="ctx-lm"):
        assert (await module.acall(question="abc")).answer == "cba"
    assert module.calls == [("aforward", "ctx-lm")]


async def test_both_defined_each_path_uses_its_own_method() -> None:
    module = Both()
    assert (await module.acall(question="x")).answer == "async"
    [(_, _, thread_name)] = module.calls
    assert thread_name == threading.current_thread().name  # awaited, no thread hop
    module.calls.clear()
    assert (await asyncio.to_thread(module, question="x")).answer == "sync"
    assert [c[0] for c in module.calls] == ["forward"]


async def test_the_most_derived_definition_serves_both_paths() -> None:
    overrides = OverridesForward()
    assert (await overrides.acall(question="x")).answer == "override"
    assert (await asyncio.to_thread(overrides, question="x")).answer == "override"
    adds = AddsAforward()
    assert (await asyncio.to_thread(adds, question="x")).answer == "async"
    assert [c[0] for c in adds.calls] == ["aforward"]


async def test_neither_defined_is_a_clear_error() -> None:
    with pytest.raises(NotImplementedError, match=r"neither forward.*nor.*aforward"):
        Neither()()
    with pytest.raises(NotImplementedError, match=r"neither forward.*nor.*aforward"):
        await Neither().acall()


class Outer(Module):
    def __init__(self) -> None:
        self.inner = Inner()
        self.seen: list[list[str]] = []

    def forward(self) -> Prediction:
        self.seen.append(caller_names())
        return self.inner()


class Inner(Module):
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def aforward(self) -> Prediction:
        self.seen.append(caller_names())
        return Prediction()


async def test_caller_modules_track_the_call_stack() -> None:
    outer = Outer()
    outer()  # sync: Inner runs through run_sync from forward
    await outer.acall()  # async: forward in a thread, Inner via run_sync there
    assert outer.seen == [["Outer"], ["Outer"]]
    assert outer.inner.seen == [["Outer", "Inner"], ["Outer", "Inner"]]
    assert settings.caller_modules == ()


class Pipeline(Module):
    """Two predictors in sequence, returning the second one's Prediction."""

    def __init__(self) -> None:
        self.first = EchoPredict(tokens=10)
        self.second = EchoPredict(tokens=100)

    def forward(self, question: str) -> Prediction:
        draft = self.first(question=question)
        return self.second(question=draft.answer)


class AsyncPipeline(Pipeline):
    async def aforward(self, question: str) -> Prediction:
        a, b = await asyncio.gather(
            self.first.acall(question=question), self.second.acall(question=question)
        )
        return Prediction(answers=[a.answer, b.answer])


class Nested(Module):
    def __init__(self) -> None:
        self.stages = [Pipeline(), Pipeline()]

    def forward(self, question: str) -> Prediction:
        for stage in self.stages:
            pred = stage(question=question)
        return Prediction(answer=pred.answer)


def test_predictor_usage_is_on_its_prediction() -> None:
    pred = EchoPredict(tokens=7)(question="q")
    assert pred.usage == Usage(prompt_tokens=7, completion_tokens=1, calls=1)


def test_composite_usage_is_the_sum_inside_the_call() -> None:
    pred = Pipeline()(question="q")
    assert pred.answer == "echo:echo:q"
    assert pred.usage == Usage(prompt_tokens=110, completion_tokens=2, calls=2)


async def test_async_composite_usage_sums_gathered_calls() -> None:
    pred = await AsyncPipeline().acall(question="q")
    assert pred.usage == Usage(prompt_tokens=110, completion_tokens=2, calls=2)


def test_nested_composites_sum_all_levels() -> None:
    assert Nested()(question="q").usage == Usage(prompt_tokens=220, completion_tokens=4, calls=4)


async def test_concurrent_calls_keep_separate_usage() -> None:
    small, big = Pipeline(), Pipeline()
    big.first.tokens = big.second.tokens = 1000
    a, b = await asyncio.gather(small.acall(question="q"), big.acall(question="q"))
    assert a.usage.prompt_tokens == 110 and b.usage.prompt_tokens == 2000


def test_result_without_recorded_usage_keeps_its_own() -> None:
    class Preset(Module):
        def forward(self) -> Prediction:
            pred = Prediction(answer="x")
            pred.usage = Usage(calls=5)
            return pred

    assert Preset()().usage == Usage(calls=5)


def test_non_prediction_results_pass_through() -> None:
    class Plain(Module):
        def forward(self) -> dict[str, int]:
            record_usage(Usage(calls=1))
            return {"x": 1}

    assert Plain()() == {"x": 1}


def test_collect_usage_sees_usage_of_calls_inside_it_and_nests() -> None:
    record_usage(Usage(calls=1))  # outside any collector: ignored
    with collect_usage() as outer:
        Pipeline()(question="q")
        with collect_usage() as inner:
            record_usage(Usage(calls=1, cost=0.25))
        assert inner.total == Usage(calls=1, cost=0.25)
    assert outer.total == Usage(prompt_tokens=110, completion_tokens=2, calls=3, cost=0.25)


def test_usage_of_a_failed_call_still_counts_for_the_caller() -> None:
    class Fails(Module):
        def forward(self) -> None:
            record_usage(Usage(calls=1))
            raise ValueError("parse failed")

    with collect_usage() as collector, pytest.raises(ValueError):
        Fails()()
    assert collector.total == Usage(calls=1)


def test_predictors_append_to_the_trace() -> None:
    trace: list[Any] = []
    program = Pipeline()
    with context(trace=trace):
        program(question="q")
    assert [(p, i) for p, i, _ in trace] == [
        (program.first, {"question": "q"}),
        (program.second, {"question": "echo:q"}),
    ]
    assert trace[1][2].answer == "echo:echo:q"


# --- calling forward directly -------------------------------------------------------


class _Echo(Module):
    def forward(self, x: Any) -> Any:
        return x


class _Outer(Module):
    def __init__(self) -> None:
        self.inner = _Echo()

    def forward(self, x: Any) -> Any:
        return self.inner(x=x)


class _Derived(_Echo):
    def forward(self, x: Any) -> Any:
        return super().forward(x)  # the parent's forward, within this call


def _direct_call_warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if "directly is discouraged" in r.getMessage()]


def test_calling_forward_directly_logs_a_warning(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.module"):
        assert _Echo().forward("x") == "x"
    warnings = _direct_call_warnings(caplog)
    assert len(warnings) == 1 and "_Echo" in warnings[0] and "module(...)" in warnings[0]


async def test_calling_through_the_module_never_warns(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.module"):
        assert _Echo()(x=1) == 1
        assert await _Echo().acall(x=2) == 2
        assert _Outer()(x=3) == 3
        assert _Derived()(x=4) == 4
    assert _direct_call_warnings(caplog) == []


def test_a_class_with_a_checked_forward_pickles_by_value(tmp_path: Any) -> None:
    # Classes from a user's script travel by value (to Ray workers, into saved programs).
    import sys

    import cloudpickle

    (tmp_path / "forward_by_value_mod.py").write_text(
        "import dspex\n\nclass Doubler(dspex.Module):\n    def forward(self, x):\n"
        "        return 2 * x\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import forward_by_value_mod  # type: ignore[import-not-found]

        cloudpickle.register_pickle_by_value(forward_by_value_mod)
        try:
            data = cloudpickle.dumps(forward_by_value_mod.Doubler())
        finally:
            cloudpickle.unregister_pickle_by_value(forward_by_value_mod)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("forward_by_value_mod", None)
    assert cloudpickle.loads(data)(x=21) == 42
