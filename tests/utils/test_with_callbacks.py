"""DSPy's callback API (`dspex.utils.callback`): with_callbacks, ACTIVE_CALL_ID, handler kinds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

import dspex
from dspex.adapters.chat import ChatAdapter
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback, with_callbacks
from dspex.utils.callback_context import _bind_active_call_id


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls.append(("module_start", inputs, call_id, ACTIVE_CALL_ID.get()))

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.calls.append(("module_end", outputs, exception, call_id))

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls.append(("tool_start", inputs))

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls.append(("format_start", inputs))


@pytest.fixture(autouse=True)
def restore_settings() -> Iterator[None]:
    saved = dspex.settings.copy()
    yield
    dspex.configure(**saved)


class Adder(dspex.Module):
    @with_callbacks
    def add(self, x: int, y: int = 2, **extra: Any) -> int:
        if x < 0:
            raise ValueError("negative")
        return x + y


def test_inputs_by_name_and_outputs() -> None:
    recorder = Recorder()
    assert Adder(callbacks=[recorder]).add(1, flag=True) == 3
    assert recorder.calls[0][:2] == ("module_start", {"x": 1, "y": 2, "extra": {"flag": True}})
    assert recorder.calls[1][:3] == ("module_end", 3, None)
    assert recorder.calls[0][2] == recorder.calls[1][3]  # one call id for start and end
    recorder.calls.clear()
    Adder().add(1)  # another instance: not observed by recorder
    assert recorder.calls == []


def test_exceptions_reach_the_end_handler_and_propagate() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="negative"):
        Adder(callbacks=[recorder]).add(-1)
    assert recorder.calls[1][0] == "module_end" and recorder.calls[1][1] is None
    assert isinstance(recorder.calls[1][2], ValueError)
    assert ACTIVE_CALL_ID.get() is None


async def test_async_methods_and_cancellation() -> None:
    started = asyncio.Event()

    class Waiter(dspex.Module):
        @with_callbacks
        async def wait(self) -> None:
            started.set()
            await asyncio.Event().wait()

    recorder = Recorder()
    task = asyncio.create_task(Waiter(callbacks=[recorder]).wait())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(recorder.calls[-1][2], asyncio.CancelledError)
    assert ACTIVE_CALL_ID.get() is None


def test_nested_module_calls_see_their_parent_id() -> None:
    class Child(dspex.Module):
        def forward(self) -> dspex.Prediction:
            return dspex.Prediction(ok=True)

    class Parent(dspex.Module):
        def __init__(self) -> None:
            self.a, self.b = Child(), Child()

        def forward(self) -> dspex.Prediction:
            self.a()
            return self.b()

    recorder = Recorder()
    dspex.configure(callbacks=[recorder])
    Parent()()
    starts = [call for call in recorder.calls if call[0] == "module_start"]
    parent_id = starts[0][2]
    assert [call[3] for call in starts] == [None, parent_id, parent_id]
    assert len({call[2] for call in starts}) == 3


def test_handler_kind_follows_the_instance() -> None:
    class Tool:
        callbacks: list[Any] = []

        @with_callbacks
        def __call__(self, query: str) -> str:
            return query

    class MyAdapter(ChatAdapter):
        format = with_callbacks(ChatAdapter.format)

    recorder = Recorder()
    dspex.configure(callbacks=[recorder])
    Tool()("q")
    signature = dspex.ensure_signature("question -> answer")
    MyAdapter().format(signature, [], {"question": "q"})
    kinds = [call[0] for call in recorder.calls]
    assert kinds[0] == "tool_start" and recorder.calls[0][1] == {"query": "q"}
    assert "format_start" in kinds


def test_wrappers_survive_cloudpickle() -> None:
    wrapped = cloudpickle.loads(cloudpickle.dumps(with_callbacks(lambda self: "sync")))
    assert wrapped(object()) == "sync"


def test_bind_active_call_id_restores_the_callers_id() -> None:
    seen: list[str | None] = []
    token = ACTIVE_CALL_ID.set("parent")
    try:
        bound = _bind_active_call_id(lambda: seen.append(ACTIVE_CALL_ID.get()))
    finally:
        ACTIVE_CALL_ID.reset(token)
    bound()
    assert seen == ["parent"] and ACTIVE_CALL_ID.get() is None
