"""Usage tracking, pricing and history."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

import pytest

from dspex.clients import GLOBAL_HISTORY, LM, Usage, inspect_history, track_usage
from dspex.clients.history import MAX_HISTORY
from dspex.clients.pricing import cost_usd, lookup_price

# --- pricing ---------------------------------------------------------------------------


def test_price_lookup_by_longest_prefix() -> None:
    assert lookup_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert lookup_price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert lookup_price("openai/gpt-4.1-nano") == (0.10, 0.40)
    assert lookup_price("claude-3-5-haiku-20241022") == (0.80, 4.00)
    assert lookup_price("llama3.1:8b") is None


def test_cost() -> None:
    assert cost_usd((1.0, 2.0), 1_000_000, 500_000) == pytest.approx(2.0)
    assert cost_usd(None, 10, 10) is None


async def test_response_cost_uses_explicit_price(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/local-model", api_base=server.base_url, price=(1.0, 3.0))
    resp = await lm.acomplete([{"role": "user", "content": "x"}])
    assert resp.usage.cost == pytest.approx((10 * 1.0 + 5 * 3.0) / 1e6)
    unknown = LM("openai/local-model", api_base=server.base_url, cache=False)
    assert (await unknown.acomplete([{"role": "user", "content": "x"}])).usage.cost is None
    known = LM("openai/gpt-4o-mini", api_base=server.base_url, cache=False)
    assert (await known.acomplete([{"role": "user", "content": "x"}])).usage.cost == pytest.approx(
        (10 * 0.15 + 5 * 0.60) / 1e6
    )


# --- usage -----------------------------------------------------------------------------


async def test_track_usage_across_gather_and_models(server: Any, isolated_cache: Any) -> None:
    a = LM("openai/a", api_base=server.base_url, price=(1.0, 1.0))
    b = LM("anthropic/b", api_base=server.base_url)
    with track_usage() as tracker:
        await asyncio.gather(
            *(a.acall(str(i)) for i in range(10)), *(b.acall(str(i)) for i in range(4))
        )
        await a.acall("0")  # cache hit: no usage
    by_model = tracker.by_model()
    assert by_model["openai/a"] == Usage(100, 50, 10, pytest.approx(150 / 1e6))
    assert by_model["anthropic/b"] == Usage(48, 16, 4, None)
    total = tracker.total()
    assert (total.calls, total.prompt_tokens, total.completion_tokens) == (14, 148, 66)
    assert tracker.cache_hits() == {"openai/a": 1}
    assert a.usage.calls == 10 and b.usage.calls == 4


async def test_calls_outside_the_block_are_not_tracked(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url, cache=False)
    with track_usage() as tracker:
        pass
    await lm.acall("x")
    assert tracker.total() == Usage()


async def test_nested_trackers_roll_up(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url, cache=False)
    with track_usage() as outer:
        await lm.acall("x")
        with track_usage() as inner:
            await lm.acall("y")
    assert inner.total().calls == 1 and outer.total().calls == 2


def test_track_usage_through_sync_calls_and_threads(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url, cache=False)
    with track_usage() as tracker:
        lm("sync")  # run_sync carries the context to the background loop
        # A thread started inside the block does not inherit contextvars unless
        # the caller copies the context, as dspex's parallel runners do.
        import contextvars

        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(lm, "threaded"))
        thread.start()
        thread.join(10)
    assert tracker.total().calls == 2


# --- history -----------------------------------------------------------------------------


async def test_history_entries(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url, api_key="sk-hidden", temperature=0.2)
    msgs = [{"role": "user", "content": "what?"}]
    await lm.acomplete(msgs, rollout_id=3)
    await lm.acomplete(msgs, rollout_id=3)
    assert len(lm.history) == 2
    entry = lm.history[0]
    assert entry is GLOBAL_HISTORY[-2]
    assert entry["model"] == "openai/m"
    assert entry["messages"] == msgs and entry["messages"] is not msgs
    assert entry["params"] == {"temperature": 0.2, "rollout_id": 3}
    assert entry["outputs"] == ["echo: what?"]
    assert entry["usage"]["prompt_tokens"] == 10 and entry["cached"] is False
    assert lm.history[1]["cached"] is True
    assert len({e["uuid"] for e in lm.history}) == 2 and entry["timestamp"] > 0
    assert "sk-hidden" not in str(entry)


async def test_inspect_history_prints(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    await lm.acomplete(
        [{"role": "system", "content": "sys text"}, {"role": "user", "content": "first"}]
    )
    await lm.acomplete([{"role": "user", "content": "second"}], n=2)
    out = io.StringIO()
    assert inspect_history(2, file=out) is None  # it prints, like DSPy's
    text = out.getvalue()
    assert "\x1b[" not in text  # no colour codes in a file
    assert text.index("first") < text.index("second")
    assert "System message:" in text and "sys text" in text
    assert "Response 2:" in text and "echo: second #1" in text
    last = io.StringIO()
    inspect_history(1, file=last)
    assert "first" not in last.getvalue() and "second" in last.getvalue()
    mine = io.StringIO()
    lm.inspect_history(1, file=mine)
    assert "echo: second #0" in mine.getvalue()


def test_global_history_is_a_bounded_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.clients import history

    assert isinstance(GLOBAL_HISTORY, list) and MAX_HISTORY == 10_000
    monkeypatch.setattr(history, "MAX_HISTORY", 3)
    monkeypatch.setattr(history, "GLOBAL_HISTORY", [])
    for i in range(5):
        history.record({"i": i})
    assert [e["i"] for e in history.GLOBAL_HISTORY] == [2, 3, 4]


def test_lm_history_is_a_list_bounded_by_max_history_size() -> None:
    import dspex
    from dspex.clients import history

    lm_history: list[dict[str, Any]] = []
    with dspex.context(max_history_size=2):
        for i in range(4):
            history.record({"i": i}, lm_history)
    assert [e["i"] for e in lm_history] == [2, 3]
    with dspex.context(max_history_size=0):
        history.record({"i": 9}, lm_history)
    assert [e["i"] for e in lm_history] == [2, 3]  # 0: the LM keeps no more entries
    assert isinstance(LM("openai/m").history, list)
