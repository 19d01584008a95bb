"""Lease mode: the caller makes the HTTP call; its endpoint's pool keeps the shared state.

With ``enable_pools(mode="lease")`` a cache-missed request does not travel to
the `ProviderPool` actor. The calling process holds an `EndpointLease` per
endpoint (`dspex.clients.endpoint_lease`), renewed from the pool's ledger a
few times a second while there is traffic, and sends the request through the
client's own pipeline (`dspex.clients.pipeline`) once its lease admits it. The
pool actor keeps what must be one for the cluster: the rate buckets, the
circuit breaker, the concurrency cap and the usage totals.

So no actor is on the path of every request: the pool sees one small call per
process per lease period instead of every prompt and answer, and a call alone
in flight pays nothing for the runtime once the process holds a lease.

What lease mode does not do: share one HTTP call between identical requests in
*different* processes (each process's single-flight still shares them within
it, and the cache in front of both).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dspex.clients.breaker import counts_as_failure
from dspex.clients.endpoint_lease import EndpointLease
from dspex.clients.limiter import estimate_tokens
from dspex.clients.pipeline import post_once, priced, send_n
from dspex.clients.retry import call_with_retries
from dspex.errors import LMRateLimitError, LMTimeoutError, LMTransportError
from dspex.runtime.pools.pool_client import (
    cached_handle,
    forget_handle,
    pool_name,
    start_pool,
)

if TYPE_CHECKING:
    from dspex.clients.endpoint_ledger import Lease, LeaseAsk
    from dspex.clients.lm import LM
    from dspex.clients.retry import RetryPolicy
    from dspex.clients.types import LMResponse, Message

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How long a renewal keeps trying while the pool is down (a restart takes ~0.5-2 s).
RENEW_RETRY_SECONDS = 30.0

_holders: dict[tuple[asyncio.AbstractEventLoop, str], EndpointLease] = {}
_process_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def send_leased(
    lm: LM,
    messages: Sequence[Message],
    params: dict[str, Any],
    *,
    num_retries: int | None,
    wait_for_circuit: bool,
    deadline: float | None,
) -> LMResponse:
    """One request under ``lm``'s endpoint lease, with the LM's retries; priced as in-process."""
    endpoint, api_key = lm.endpoint(), lm.credential()
    name = pool_name(endpoint.provider, endpoint.model_name, endpoint.api_base)
    holder = _holder_for(asyncio.get_running_loop(), name, lm)
    policy = lm.retry_policy
    if num_retries is not None and num_retries != policy.num_retries:
        policy = dataclasses.replace(policy, num_retries=num_retries)
    retries = 0

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        nonlocal retries
        retries += 1

    async def one(single: dict[str, Any]) -> LMResponse:
        tokens = estimate_tokens(messages, single)

        async def attempt() -> LMResponse:
            wait_until = None
            if wait_for_circuit:
                wait = holder.max_circuit_wait
                if deadline is not None:
                    wait = min(wait, deadline - time.time())
                wait_until = time.monotonic() + max(0.0, wait)
            ticket = await holder.admit(tokens, wait_until=wait_until)
            try:
                timeout = _time_left(lm.timeout, deadline)
            except LMTimeoutError:
                holder.finish(ticket, failed=None, sent=False)
                raise
            try:
                response = await post_once(
                    lm.protocol,
                    endpoint,
                    messages,
                    single,
                    api_key=api_key,
                    transport=lm.transport,
                    timeout=timeout,
                )
            except asyncio.CancelledError:
                holder.finish(ticket, failed=None)  # it may have been sent: its permit is spent
                raise
            except Exception as error:
                retry_after = error.retry_after if isinstance(error, LMRateLimitError) else None
                failed = counts_as_failure(error, count_rate_limits=holder.count_rate_limits)
                holder.finish(ticket, failed=failed, retry_after=retry_after)
                raise
            usage = response.usage
            holder.finish(
                ticket,
                failed=False,
                actual_tokens=usage.total_tokens,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost=priced(response, lm.resolved_price).usage.cost,
            )
            return response

        return await call_with_retries(attempt, policy, on_retry=on_retry)

    try:
        response = await send_n(lm.protocol, params, lm.model, one)
    except asyncio.CancelledError:
        raise
    except Exception:
        holder.request_done(ok=False, retries=retries)
        raise
    holder.request_done(ok=True, retries=retries)
    return priced(response, lm.resolved_price)


async def gated_send(
    lm: LM,
    attempt_fn: Callable[[], Awaitable[T]],
    *,
    tokens: int,
    policy: RetryPolicy,
) -> T:
    """A request that is not a chat completion (an embeddings batch) made under ``lm``'s
    endpoint lease: each attempt of ``attempt_fn`` waits for a permit, so the endpoint's
    rate limits, breaker and concurrency cap hold for it cluster-wide as for chat calls.
    ``lm`` names the endpoint and its limits; ``policy``: the caller's retries."""
    endpoint = lm.endpoint()
    name = pool_name(endpoint.provider, endpoint.model_name, endpoint.api_base)
    holder = _holder_for(asyncio.get_running_loop(), name, lm)
    retries = 0

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        nonlocal retries
        retries += 1

    async def attempt() -> T:
        ticket = await holder.admit(tokens)
        try:
            result = await attempt_fn()
        except asyncio.CancelledError:
            holder.finish(ticket, failed=None)
            raise
        except Exception as error:
            retry_after = error.retry_after if isinstance(error, LMRateLimitError) else None
            failed = counts_as_failure(error, count_rate_limits=holder.count_rate_limits)
            holder.finish(ticket, failed=failed, retry_after=retry_after)
            raise
        holder.finish(ticket, failed=False, actual_tokens=tokens, prompt_tokens=tokens)
        return result

    try:
        result = await call_with_retries(attempt, policy, on_retry=on_retry)
    except asyncio.CancelledError:
        raise
    except Exception:
        holder.request_done(ok=False, retries=retries)
        raise
    holder.request_done(ok=True, retries=retries)
    return result


async def flush_leases() -> None:
    """Deliver this event loop's lease reports now (pool stats then count every request)."""
    loop = asyncio.get_running_loop()
    holders = [h for (lp, _), h in list(_holders.items()) if lp is loop]
    await asyncio.gather(*(h.flush() for h in holders))


def forget_leases() -> None:
    """Drop this process's leases (the runtime stopped; a later start leases afresh)."""
    _holders.clear()


def _holder_for(loop: asyncio.AbstractEventLoop, name: str, lm: LM) -> EndpointLease:
    holder = _holders.get((loop, name))
    if holder is not None:
        return holder
    for stale in [k for k in list(_holders) if k[0].is_closed()]:
        _holders.pop(stale, None)
    holder = EndpointLease(_Renewer(name, lm), holder=f"{_process_id}-{id(loop):x}")
    _holders[(loop, name)] = holder
    return holder


class _Renewer:
    """Asks the endpoint's pool for a lease; re-resolves the pool after it died."""

    def __init__(self, name: str, lm: LM) -> None:
        self._name = name
        self._lm = lm  # to (re)start the pool; holds no key

    async def __call__(self, ask: LeaseAsk) -> Lease:
        from ray.exceptions import RayActorError

        give_up_at = time.monotonic() + RENEW_RETRY_SECONDS
        attempt = 0
        while True:
            handle = cached_handle(self._name)
            try:
                if handle is None:
                    # Resolving or creating a named actor is a blocking GCS round trip.
                    handle = await asyncio.to_thread(start_pool, self._lm)
                return await handle.lease.remote(ask)
            except RayActorError as error:
                if handle is not None:
                    forget_handle(self._name, handle)
                if time.monotonic() >= give_up_at:
                    raise LMTransportError(
                        f"provider pool {self._name} stayed unavailable for "
                        f"{RENEW_RETRY_SECONDS:g}s ({type(error).__name__}); check the Ray "
                        "logs of the pool actor"
                    ) from None
                logger.warning(
                    "dspex: provider pool %s unavailable (%s); asking again for a lease",
                    self._name,
                    type(error).__name__,
                )
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))  # let a restart land
                attempt += 1


def _time_left(timeout: float, deadline: float | None) -> float:
    if deadline is None:
        return timeout
    left = deadline - time.time()
    if left <= 0:
        error = LMTimeoutError("the request's deadline passed before it could be sent")
        error.retryable = False  # retrying cannot bring the deadline back
        raise error
    return min(timeout, left)


__all__ = ["flush_leases", "forget_leases", "gated_send", "send_leased"]
