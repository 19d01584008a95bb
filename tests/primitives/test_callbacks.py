"""DSPy-style callbacks (`dspex.BaseCallback`) on real modules against the simulated LM over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.evaluate import Evaluate
from dspex.observability import hooks
from dspex.primitives import callbacks
from dspex.simlm import start_sim_lm


@pytest.fixture(scope="module")
def lm() -> Iterator[dspex.LM]:
    server = start_sim_lm(seed=0)
    try:
        yield dspex.LM("openai/sim", api_base=server.url, api_key="sk-local", cache=False)
    finally:
        server.stop()


class Recorder(dspex.BaseCallback):
    """Records every handler call as (handler, call_id, details)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def _start(self, name: str, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls.append((name, call_id, {"instance": instance, "inputs": inputs}))

    def _end(self, name: str, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        self.calls.append((name, call_id, {"outputs": outputs, "exception": exception}))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("module_start", call_id, instance, inputs)

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("module_end", call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("lm_start", call_id, instance, inputs)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("lm_end", call_id, outputs, exception)

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("format_start", call_id, instance, inputs)

    def on_adapter_format_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self._end("format_end", call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("parse_start", call_id, instance, inputs)

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self._end("parse_end", call_id, outputs, exception)

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start("evaluate_start", call_id, instance, inputs)

    def on_evaluate_end(
        self, call_id: str, outputs: Any, exception: BaseException | None = None
    ) -> None:
        self._end("evaluate_end", call_id, outputs, exception)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def first(self, name: str) -> tuple[str, dict[str, Any]]:
        _, call_id, details = next(call for call in self.calls if call[0] == name)
        return call_id, details


def test_configured_callbacks_see_every_step_of_a_chain_of_thought_call(lm: dspex.LM) -> None:
    recorder = Recorder()
    program = dspex.ChainOfThought("question -> answer")
    with dspex.context(lm=lm, callbacks=[recorder]):
        prediction = program(question="What is 2 + 3?")

    assert recorder.names() == [
        "module_start",  # ChainOfThought
        "module_start",  # its Predict
        "format_start",
        "format_end",
        "lm_start",
        "lm_end",
        "parse_start",
        "parse_end",
        "module_end",
        "module_end",
    ]
    outer_id, outer = recorder.first("module_start")
    assert outer["instance"] is program
    assert outer["inputs"] == {"args": (), "kwargs": {"question": "What is 2 + 3?"}}
    # Each start pairs with its end through the call id; ends close inner calls first.
    assert recorder.calls[-1][1] == outer_id and recorder.calls[-1][2]["outputs"] is prediction
    assert recorder.calls[-2][1] == recorder.calls[1][1] != outer_id

    _, lm_start = recorder.first("lm_start")
    assert lm_start["instance"] is lm
    assert lm_start["inputs"]["messages"][-1]["content"].startswith("[[ ## question ## ]]")
    _, lm_end = recorder.first("lm_end")
    assert isinstance(lm_end["outputs"], list) and lm_end["exception"] is None
    _, parse_start = recorder.first("parse_start")
    assert parse_start["inputs"]["completion"] == lm_end["outputs"][0]
    _, parse_end = recorder.first("parse_end")
    assert parse_end["outputs"]["answer"] == prediction.answer
    _, format_end = recorder.first("format_end")
    assert format_end["outputs"] == lm_start["inputs"]["messages"]


def test_a_module_s_own_callbacks_see_only_its_calls(lm: dspex.LM) -> None:
    recorder = Recorder()
    predict = dspex.Predict("question -> answer", callbacks=[recorder])
    other = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        prediction = predict(question="What is 1 + 1?")
        other(question="What is 2 + 2?")
    # DSPy's rule: an instance's callbacks cover calls of that instance only.
    assert recorder.names() == ["module_start", "module_end"]
    assert recorder.calls[0][2]["instance"] is predict
    assert recorder.calls[1][2]["outputs"] is prediction


def test_a_failing_call_reports_its_exception_and_no_outputs(lm: dspex.LM) -> None:
    recorder = Recorder()

    class Broken(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            raise ValueError("no answer today")

    with dspex.context(callbacks=[recorder]), pytest.raises(ValueError, match="no answer today"):
        Broken()(question="x")
    _, end = recorder.first("module_end")
    assert end["outputs"] is None and isinstance(end["exception"], ValueError)


def test_a_broken_callback_is_logged_and_never_breaks_the_call(
    lm: dspex.LM, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(dspex.BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            raise RuntimeError("callback bug")

        def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            raise RuntimeError("callback bug")

    recorder = Recorder()
    program = dspex.Predict("question -> answer")
    with caplog.at_level(logging.ERROR), dspex.context(lm=lm, callbacks=[Broken(), recorder]):
        prediction = program(question="What is 2 + 3?")
    assert prediction.answer  # the call went through
    assert "module_end" in recorder.names() and "lm_end" in recorder.names()  # the others ran
    failures = [r for r in caplog.records if "callback" in r.getMessage() and r.exc_info]
    assert {r.getMessage().rsplit(" ", 1)[-1] for r in failures} == {"on_module_start", "on_lm_end"}


def test_direct_lm_calls_and_evaluations_reach_configured_callbacks(lm: dspex.LM) -> None:
    recorder = Recorder()
    devset = [dspex.Example(question=f"What is {i} + 1?", answer=str(i + 1)).with_inputs("question") for i in range(3)]
    evaluate = Evaluate(devset=devset, metric=lambda example, prediction, trace=None: 1.0)
    program = dspex.Predict("question -> answer")
    with dspex.context(lm=lm, callbacks=[recorder]):
        outputs = lm("Say hi")
        result = evaluate(program)

    lm_id, lm_start = recorder.first("lm_start")
    assert lm_start["inputs"]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert recorder.calls[1] == ("lm_end", lm_id, {"outputs": outputs, "exception": None})
    eval_id, eval_start = recorder.first("evaluate_start")
    assert eval_start["instance"] is evaluate and eval_start["inputs"]["program"] is program
    assert recorder.calls[-1] == ("evaluate_end", eval_id, {"outputs": result, "exception": None})
    assert recorder.names().count("module_start") == 3  # one per example


def test_callbacks_without_handlers_for_a_call_are_skipped(lm: dspex.LM) -> None:
    class OnlyLM:  # duck-typed, as DSPy allows: no BaseCallback, one handler
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.seen.append(call_id)

    only = OnlyLM()
    with dspex.context(lm=lm, callbacks=[only]):
        dspex.Predict("question -> answer")(question="What is 4 + 4?")
    assert len(only.seen) == 1


def test_the_dispatcher_is_registered_when_a_callback_first_appears(lm: dspex.LM) -> None:
    # Programs without callbacks pay nothing: the dispatcher joins the call observers
    # only once a callback is given, however it is given.
    hooks.remove_call_observer(callbacks.DISPATCHER)
    try:
        predict = dspex.Predict("question -> answer")
        assert callbacks.DISPATCHER not in hooks.call_observers
        recorder = Recorder()
        predict.callbacks.append(recorder)  # in place, after construction
        assert callbacks.DISPATCHER in hooks.call_observers
        with dspex.context(lm=lm):
            predict(question="What is 3 + 3?")
        assert recorder.names() == ["module_start", "module_end"]

        hooks.remove_call_observer(callbacks.DISPATCHER)
        dspex.configure(callbacks=[])  # an empty list enables nothing
        assert callbacks.DISPATCHER not in hooks.call_observers
        with dspex.context(callbacks=[Recorder()]):
            assert callbacks.DISPATCHER in hooks.call_observers
    finally:
        callbacks.enable()


def test_a_copied_or_pickled_program_keeps_its_callbacks(lm: dspex.LM) -> None:
    import cloudpickle

    recorder = Recorder()
    program = dspex.Predict("question -> answer", callbacks=[recorder])
    clone = program.deepcopy()
    assert len(clone.callbacks) == 1 and isinstance(clone.callbacks, callbacks.CallbackList)
    revived = cloudpickle.loads(cloudpickle.dumps(program))
    assert isinstance(revived.callbacks, callbacks.CallbackList) and len(revived.callbacks) == 1
    with dspex.context(lm=lm):
        clone(question="What is 5 + 5?")
    copied_recorder = clone.callbacks[0]  # a deep copy copies the handler too
    assert copied_recorder.names() == ["module_start", "module_end"] and recorder.names() == []
