from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from dspex.errors import ConfigurationError, SettingsOwnerError
from dspex.primitives import (
    UnknownSettingError,
    configure,
    context,
    record_trace,
    settings,
)
from dspex.primitives.settings import DEFAULTS


async def _hop() -> None:
    """Suspend the current task once, letting the event loop run others."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, None)
    await future


def test_defaults() -> None:
    # As in DSPy, predictions are traced by default (into a list capped at max_trace_size).
    assert settings.lm is None and settings.adapter is None and isinstance(settings.trace, list)
    assert DEFAULTS["trace"] == []
    assert settings.max_trace_size == 10_000
    assert settings.num_threads == 16 and settings.max_errors == 10
    assert settings.track_usage is True and settings.disable_history is False
    assert settings.callbacks == [] and settings.caller_modules == ()
    assert settings.rollout_id is None


def test_configure_sets_process_wide_defaults() -> None:
    configure(lm="lm-a", num_threads=4)
    assert settings.lm == "lm-a" and settings["num_threads"] == 4
    assert settings.config["lm"] == "lm-a"


def test_unknown_keys_are_rejected_listing_valid_ones() -> None:
    for call in (lambda: configure(lmm=1), lambda: context(lmm=1), lambda: settings.lmm):
        with pytest.raises(
            ConfigurationError, match=r"'lmm'.*valid settings are:.*lm.*num_threads"
        ):
            call()
    assert not hasattr(settings, "lmm")  # also an AttributeError
    assert issubclass(UnknownSettingError, AttributeError)
    assert settings.get("lmm", 3) == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trace", ()),
        ("max_trace_size", -1),
        ("track_usage", 1),
        ("callbacks", ()),
        ("num_threads", 0),
        ("num_threads", True),
        ("max_errors", "3"),
        ("disable_history", "no"),
        ("track_usage", "yes"),
        ("rollout_id", 1.5),
        ("rollout_id", True),
        ("caller_modules", []),
    ],
)
def test_ill_typed_values_are_rejected(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        configure(**{key: value})
    with pytest.raises(ConfigurationError, match=key):
        context(**{key: value})


def test_settings_cannot_be_assigned() -> None:
    with pytest.raises(ConfigurationError, match="configure"):
        settings.lm = "x"


def test_context_overrides_and_restores() -> None:
    configure(lm="default")
    with context(lm="outer", num_threads=2):
        assert settings.lm == "outer" and settings.num_threads == 2
        with settings.context(lm="inner"):
            assert settings.lm == "inner" and settings.num_threads == 2
        assert settings.lm == "outer"
    assert settings.lm == "default" and settings.num_threads == 16


def test_context_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), context(lm="x"):
        raise RuntimeError("boom")
    assert settings.lm is None


def test_override_wins_over_a_later_configure() -> None:
    with context(lm="override"):
        configure(lm="new-default")
        assert settings.lm == "override"
    assert settings.lm == "new-default"


async def test_context_spans_awaits_and_supports_async_with() -> None:
    with context(lm="sync-with"):
        await _hop()
        assert settings.lm == "sync-with"
    async with context(lm="async-with"):
        await _hop()
        assert settings.lm == "async-with"
    assert settings.lm is None


async def test_each_task_of_a_gather_sees_its_own_overrides() -> None:
    n = 5
    entered = 0
    all_entered = asyncio.Event()

    async def task(i: int) -> tuple[Any, Any]:
        nonlocal entered
        with context(lm=f"lm-{i}"):
            entered += 1
            if entered == n:
                all_entered.set()
            # Every task is inside its own override before any reads or exits.
            await all_entered.wait()
            seen = settings.lm
        return seen, settings.lm

    with context(lm="parent"):
        results = await asyncio.gather(*(task(i) for i in range(n)))
        assert settings.lm == "parent"
    assert results == [(f"lm-{i}", "parent") for i in range(n)]


def test_a_new_thread_sees_defaults_not_the_starters_overrides() -> None:
    configure(lm="default")
    seen: dict[str, Any] = {}

    def read(key: str) -> None:
        seen[key] = settings.lm

    with context(lm="override"):
        plain = threading.Thread(target=read, args=("plain",))
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(read, "copied"))
        plain.start()
        copied.start()
        plain.join()
        copied.join()
    assert seen == {"plain": "default", "copied": "override"}


def test_a_context_in_one_thread_does_not_leak_into_another() -> None:
    inside = threading.Event()
    done_reading = threading.Event()
    seen: dict[str, Any] = {}

    def holder() -> None:
        with context(lm="thread-a"):
            seen["a"] = settings.lm
            inside.set()
            done_reading.wait(timeout=10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(timeout=10)
    seen["main"] = settings.lm  # read while thread A is inside its context
    done_reading.set()
    thread.join()
    assert seen == {"a": "thread-a", "main": None}


def _in_thread(function: Any) -> Any:
    """Run ``function`` in a new thread; return what it returned or raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed back to the test
            outcome["value"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome["value"]


def test_configure_from_a_thread_is_seen_everywhere() -> None:
    # The first thread to configure owns the defaults; every thread reads them.
    assert _in_thread(lambda: configure(lm="from-thread")) is None
    assert settings.lm == "from-thread"
    assert _in_thread(lambda: settings.lm) == "from-thread"


def test_only_the_thread_that_configured_first_may_configure_again() -> None:
    # Changed to follow DSPy (dspex let any thread configure): a second writer thread
    # would race the first one, so it must use context() instead.
    configure(lm="main")
    raised = _in_thread(lambda: configure(lm="worker"))
    assert isinstance(raised, SettingsOwnerError)
    assert isinstance(raised, RuntimeError) and isinstance(raised, ConfigurationError)
    assert "dspex.context" in str(raised) and "MainThread" in str(raised)
    assert settings.lm == "main"

    def use_context() -> Any:
        with context(lm="worker"):
            return settings.lm

    assert _in_thread(use_context) == "worker"
    configure(lm="main again")  # the owner still may
    assert settings.lm == "main again"


def test_a_thread_that_ended_hands_configure_on() -> None:
    assert _in_thread(lambda: configure(lm="short-lived")) is None
    configure(lm="main")  # the first owner has ended: main takes over
    assert isinstance(_in_thread(lambda: configure(lm="x")), SettingsOwnerError)


async def test_only_the_task_that_configured_first_may_configure_again() -> None:
    configure(lm="entry task")

    async def other_task() -> None:
        configure(lm="other task")

    async def context_in_other_task() -> Any:
        with context(lm="scoped"):
            await _hop()
            return settings.lm

    results = await asyncio.gather(other_task(), context_in_other_task(), return_exceptions=True)
    assert isinstance(results[0], SettingsOwnerError)
    assert "same async task" in str(results[0]) and "dspex.context" in str(results[0])
    assert results[1] == "scoped"
    await other_task()  # awaited directly: runs in the entry task, so it may configure
    assert settings.lm == "other task"


async def test_a_finished_task_hands_configure_on() -> None:
    async def configure_then_end() -> None:
        configure(lm="first task")

    await asyncio.create_task(configure_then_end())
    configure(lm="second task")  # the first owner is done
    assert settings.lm == "second task"


def test_callbacks_none_means_no_callbacks() -> None:
    configure(callbacks=None)
    assert settings.callbacks == []
    with context(callbacks=None):
        assert settings.callbacks == []


def test_record_trace_appends_only_when_tracing_and_caps_size() -> None:
    record_trace("p", {"q": 1}, "pred")  # no trace: nothing to do, no error
    trace: list[Any] = []
    with context(trace=trace, max_trace_size=2):
        inputs = {"q": 1}
        record_trace("p1", inputs, "r1")
        inputs["q"] = 99  # the trace keeps a copy of the inputs
        record_trace("p2", {"q": 2}, "r2")
        assert trace == [("p1", {"q": 1}, "r1"), ("p2", {"q": 2}, "r2")]
        record_trace("p3", {"q": 3}, "r3")  # over the cap: the oldest goes
    assert trace == [("p2", {"q": 2}, "r2"), ("p3", {"q": 3}, "r3")]


def test_dir_and_repr_list_settings() -> None:
    assert {"lm", "trace", "configure", "context"} <= set(dir(settings))
    assert "num_threads" in repr(settings)
