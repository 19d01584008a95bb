"""Retry policy with a fake sleep, and end to end against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.clients import LM
from dspex.clients.retry import RetryPolicy, call_with_retries
from dspex.errors import LMAuthError, LMRateLimitError, LMServerError, LMTimeoutError


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(errors: list[BaseException], result: str = "ok") -> Any:
    calls = {"n": 0}

    async def attempt() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    attempt.calls = calls  # type: ignore[attr-defined]
    return attempt


async def test_retries_retryable_errors_then_succeeds() -> None:
    sleep = FakeSleep()
    attempt = failing([LMServerError("5xx"), LMTimeoutError("slow")])
    policy = RetryPolicy(num_retries=3, sleep=sleep, rand=lambda: 1.0)
    assert await call_with_retries(attempt, policy) == "ok"
    assert attempt.calls["n"] == 3
    # full jitter upper bounds: base * 2**k
    assert sleep.delays == [0.5, 1.0]


async def test_non_retryable_raises_at_once() -> None:
    sleep = FakeSleep()
    attempt = failing([LMAuthError("bad key")])
    with pytest.raises(LMAuthError):
        await call_with_retries(attempt, RetryPolicy(num_retries=5, sleep=sleep))
    assert attempt.calls["n"] == 1 and sleep.delays == []


async def test_gives_up_after_num_retries_with_the_last_error() -> None:
    sleep = FakeSleep()
    errors: list[BaseException] = [LMServerError(f"e{i}") for i in range(10)]
    attempt = failing(errors)
    with pytest.raises(LMServerError, match="e3"):
        await call_with_retries(attempt, RetryPolicy(num_retries=3, sleep=sleep))
    assert attempt.calls["n"] == 4 and len(sleep.delays) == 3


async def test_zero_retries_means_one_attempt() -> None:
    attempt = failing([LMServerError("x")])
    with pytest.raises(LMServerError):
        await call_with_retries(attempt, RetryPolicy(num_retries=0, sleep=FakeSleep()))
    assert attempt.calls["n"] == 1


async def test_retry_after_hint_wins_and_is_capped() -> None:
    sleep = FakeSleep()
    attempt = failing(
        [LMRateLimitError("429", retry_after=7.0), LMRateLimitError("429", retry_after=3600.0)]
    )
    policy = RetryPolicy(num_retries=3, sleep=sleep, rand=lambda: 0.0, retry_after_cap=60.0)
    await call_with_retries(attempt, policy)
    assert sleep.delays == [7.0, 60.0]


def test_backoff_is_full_jitter_and_capped() -> None:
    error = LMServerError("x")
    low = RetryPolicy(rand=lambda: 0.0)
    high = RetryPolicy(rand=lambda: 0.999999, cap=30.0)
    assert low.delay(5, error) == 0.0
    assert high.delay(0, error) == pytest.approx(0.5, rel=1e-5)
    assert high.delay(3, error) == pytest.approx(4.0, rel=1e-5)
    assert high.delay(20, error) == pytest.approx(30.0, rel=1e-5)


def test_on_retry_sees_each_wait() -> None:
    import asyncio

    seen: list[tuple[int, str]] = []
    attempt = failing([LMServerError("a"), LMServerError("b")])
    policy = RetryPolicy(num_retries=2, sleep=FakeSleep())
    asyncio.run(
        call_with_retries(attempt, policy, on_retry=lambda k, e, d: seen.append((k, str(e))))
    )
    assert seen == [(0, "a"), (1, "b")]


# --- end to end -------------------------------------------------------------------


async def test_lm_retries_500_and_429_against_a_server(server: Any, isolated_cache: Any) -> None:
    server.push(500, {"error": {"message": "boom"}})
    server.push(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    lm = LM("openai/test", api_base=server.base_url, num_retries=3, cache=False)
    sleep = FakeSleep()
    lm.retry_policy = RetryPolicy(num_retries=3, sleep=sleep)
    resp = await lm.acomplete([{"role": "user", "content": "hello"}])
    assert resp.outputs == ["echo: hello"]
    assert server.count == 3
    assert len(sleep.delays) == 2
    assert sleep.delays[1] <= RetryPolicy().retry_after_jitter  # Retry-After: 0 plus jitter
    assert resp.usage.calls == 1


async def test_lm_retry_with_real_sleep_and_retry_after_zero(
    server: Any, isolated_cache: Any
) -> None:
    server.push(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    server.push(503, {"error": {"message": "busy"}}, {"Retry-After": "0"})
    lm = LM("openai/test", api_base=server.base_url, cache=False)
    assert await lm.acall("x") == ["echo: x"]
    assert server.count == 3


async def test_lm_raises_after_retries_exhausted(server: Any, isolated_cache: Any) -> None:
    for _ in range(3):
        server.push(500, {"error": {"message": "down"}})
    lm = LM("openai/test", api_base=server.base_url, num_retries=2, cache=False)
    lm.retry_policy = RetryPolicy(num_retries=2, sleep=FakeSleep())
    with pytest.raises(LMServerError, match="down") as info:
        await lm.acall("x")
    assert info.value.model == "openai/test"
    assert server.count == 3


async def test_lm_does_not_retry_auth_errors(server: Any, isolated_cache: Any) -> None:
    server.push(401, {"error": {"message": "Incorrect API key"}})
    lm = LM("openai/test", api_base=server.base_url, cache=False)
    with pytest.raises(LMAuthError, match="OPENAI_API_KEY"):
        await lm.acall("x")
    assert server.count == 1


def test_default_policy_pickles_without_random_state() -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(RetryPolicy(num_retries=2)))
    assert clone.rand is None and clone.sleep is None and clone.num_retries == 2
