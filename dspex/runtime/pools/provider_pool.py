"""`ProviderPool`: every request to one LM endpoint in the cluster, made in one place.

One pool per (provider, model, api_base) runs as a named detached Ray actor
(see `dspex.runtime.pools.pool_client`). Because every cache-missed request for that
endpoint passes through it, its limits hold cluster-wide exactly:

- a bounded number of HTTP calls in flight (``max_concurrency``), made with
  the core's async transport (aiohttp);
- a circuit breaker (`dspex.clients.breaker`), opened by the share of
  failed calls over a sliding window (a flaky provider is not a down one), one
  probe when the reset timeout has passed. While it is open, an interactive
  request (a served program's) fails fast with `CircuitOpenError`; a batch
  request (``wait_for_circuit``: an evaluation's, an optimizer's) waits for the
  probe's outcome, up to ``max_circuit_wait`` and its deadline, without
  holding a concurrency slot or rate budget meanwhile;
- smooth rpm / tpm limits (`dspex.clients.limiter`), paused by a 429's
  ``Retry-After``;
- single-flight: identical requests in flight from any process share one call.

Each HTTP attempt runs the client's request pipeline (`dspex.clients.pipeline`:
encode, post, decode, price, split ``n``), with the client's retries and
single-flight (`dspex.clients.single_flight`), so a request made here behaves
as the same request made in-process.

Requests arrive in batches (one actor call carries many prompts) and results
go back as they finish. ``ProviderPool`` is a plain class with async methods:
a unit test instantiates it directly; `pool_client` wraps it with ``ray.remote``.

The API key arrives with each batch as a separate argument. It is used to build
that batch's HTTP headers and is never logged, stored, put in stats or events.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.clients.breaker import BreakerState, CircuitBreaker
from dspex.clients.breaker_state import (
    DEFAULT_FAIL_MAX,
    DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_RESET_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_SECONDS,
)
from dspex.clients.endpoint_ledger import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_CIRCUIT_WAIT,
    EndpointLedger,
    Lease,
    LeaseAsk,
)
from dspex.clients.limiter import RateLimiter, Reservation, estimate_tokens
from dspex.clients.pipeline import Endpoint, post_once, priced, send_n
from dspex.clients.pricing import Price, lookup_price
from dspex.clients.retry import RetryPolicy, call_with_retries
from dspex.clients.single_flight import SingleFlight
from dspex.clients.transport import Transport
from dspex.clients.types import LMResponse, Message, Usage
from dspex.errors import (
    CircuitOpenError,
    ConfigurationError,
    LMRateLimitError,
    LMTimeoutError,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 256
RECENT_WINDOW_SECONDS = 10.0

Outcome = LMResponse | BaseException
"""What one request came to: its response, or the error it failed with (as a value)."""


@dataclass(frozen=True)
class PoolConfig:
    """A pool's endpoint and limits. Never holds a secret: it is pickled to the actor.

    The breaker opens when ``failure_rate_threshold`` of the last ``window``
    calls (none older than ``window_seconds``) failed, judged from
    ``minimum_calls`` on, or after ``fail_max`` failures in a row (None: rate
    only); it probes after ``reset_timeout`` s. A batch request waits at most
    ``max_circuit_wait`` s for an open circuit (see `dspex.clients.breaker_state`).
    """

    provider: str
    model: str  # as the LM spells it, "openai/gpt-4o-mini"
    model_name: str  # as the provider spells it, "gpt-4o-mini"
    api_base: str
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    price: Price | None = None
    fail_max: int | None = DEFAULT_FAIL_MAX
    reset_timeout: float = DEFAULT_RESET_TIMEOUT
    count_rate_limits: bool = True
    transport: Transport | None = None  # None: the default aiohttp transport
    failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD
    window: int = DEFAULT_WINDOW
    window_seconds: float | None = DEFAULT_WINDOW_SECONDS
    minimum_calls: int | None = None  # None: 50, or ``window`` if smaller
    max_circuit_wait: float = DEFAULT_MAX_CIRCUIT_WAIT
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    """How long a lease is good for (lease mode): how late a caller learns of an open circuit."""
    lease_max_concurrency: int | None = None
    """The cluster-wide cap on requests in flight under leases (None: no cap; set from
    the LM's ``max_concurrency``). The pool's own ``max_concurrency`` bounds the HTTP
    calls it makes itself."""

    def __post_init__(self) -> None:
        if not self.max_circuit_wait >= 0:
            raise ConfigurationError(
                "provider pool: max_circuit_wait must be >= 0 seconds (how long batch work "
                f"waits for an open circuit; 0 fails fast), got {self.max_circuit_wait!r}"
            )


@dataclass(frozen=True)
class PoolRequest:
    """One chat request. ``key`` (the cache key) lets identical requests share a call;
    ``deadline`` is a wall-clock time (``time.time()``) after which it is not sent.
    ``wait_for_circuit``: batch work, which waits for an open circuit's probe
    (up to the pool's ``max_circuit_wait`` and the deadline) rather than failing
    fast with `CircuitOpenError` as an interactive request does."""

    messages: Sequence[Message]
    params: dict[str, Any]
    key: str | None = None
    deadline: float | None = None
    timeout: float = 60.0
    num_retries: int = 3
    wait_for_circuit: bool = False
    retry_policy: RetryPolicy | None = None
    """The LM's backoff schedule (None: the default one with ``num_retries``)."""


@dataclass
class _Counters:
    batches: int = 0  # actor calls received (each carries one or more requests)
    calls: int = 0  # HTTP attempts answered (or failed in transport)
    requests: int = 0  # requests answered successfully
    errors: int = 0  # requests that failed after retries
    shared: int = 0  # requests answered by another request's call (single-flight)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    recent: deque[float] = field(default_factory=deque)  # finish times, for requests/s


class ProviderPool:
    """Makes the HTTP calls of one (provider, model, api_base) for the whole cluster."""

    def __init__(self, config: PoolConfig, *, name: str | None = None) -> None:
        from dspex.clients.lm import PROTOCOLS

        self.config = config
        self.name = name or f"pool:{config.model}"
        self._protocol = PROTOCOLS[config.provider]
        self._price = config.price if config.price is not None else lookup_price(config.model_name)
        self._transport = config.transport
        self._endpoint = Endpoint(config.provider, config.model, config.model_name, config.api_base)
        self._slots = asyncio.Semaphore(max(1, config.max_concurrency))
        self.breaker = CircuitBreaker(
            fail_max=config.fail_max,
            reset_timeout=config.reset_timeout,
            failure_rate_threshold=config.failure_rate_threshold,
            window=config.window,
            window_seconds=config.window_seconds,
            minimum_calls=config.minimum_calls,
            count_rate_limits=config.count_rate_limits,
            on_state_change=self._breaker_changed,
            name=config.model,
        )
        self.limiter = RateLimiter(rpm=config.rpm, tpm=config.tpm)
        # Callers that make their own HTTP calls lease from the same circuit and buckets.
        self.ledger = EndpointLedger(
            circuit=self.breaker.logic,
            limiter=self.limiter,
            max_concurrency=config.lease_max_concurrency,
            lease_seconds=config.lease_seconds,
            max_circuit_wait=config.max_circuit_wait,
            count_rate_limits=config.count_rate_limits,
        )
        self._flights = SingleFlight()
        self._counters = _Counters()
        self._queued = 0
        self._in_flight = 0

    # --- the actor's API -------------------------------------------------------

    async def complete_batch(
        self, requests: Sequence[PoolRequest], api_key: str | None = None
    ) -> AsyncIterator[list[tuple[int, Outcome]]]:
        """Serve ``requests``; yield ``[(index, outcome), ...]`` as they finish.

        Results that finish together come out in one chunk, so a burst of quick
        answers costs one streamed object, not one each. Consumed through Ray as
        a streaming generator (``num_returns="streaming"``).
        """
        self._counters.batches += 1
        credential = _credential_id(api_key)
        tasks = [
            asyncio.ensure_future(self._indexed(i, request, api_key, credential))
            for i, request in enumerate(requests)
        ]
        try:
            pending: set[asyncio.Future[tuple[int, Outcome]]] = set(tasks)
            while pending:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                await asyncio.sleep(0)  # one more loop pass: answers landing now share the chunk
                done = {task for task in pending if task.done()}
                pending -= done
                yield [task.result() for task in done]
        finally:
            # The consumer went away (client died, generator closed): stop the work.
            for task in tasks:
                task.cancel()

    async def complete_all(
        self, requests: Sequence[PoolRequest], api_key: str | None = None
    ) -> list[Outcome]:
        """Serve ``requests``; return every outcome at once, in order (one object back)."""
        self._counters.batches += 1
        credential = _credential_id(api_key)
        return list(
            await asyncio.gather(*(self._outcome(r, api_key, credential) for r in requests))
        )

    async def lease(self, ask: LeaseAsk) -> Lease:
        """Take a caller's report and grant its next lease (see `dspex.clients.endpoint_ledger`)."""
        lease, transitions = self.ledger.lease(self.breaker.clock(), ask)
        self.breaker.announce(transitions)
        if ask.report.requests:  # for requests_per_s: answered now, as far as the pool knows
            now = time.monotonic()
            self._counters.recent.extend([now] * ask.report.requests)
            _prune(self._counters.recent, now)
        return lease

    async def stats(self) -> dict[str, Any]:
        """Counters for dashboards and tests. Never includes a key or a prompt."""
        c = self._counters
        t = self.ledger.totals  # what leaseholders reported making themselves
        now = time.monotonic()
        _prune(c.recent, now)
        return {
            "name": self.name,
            "model": self.config.model,
            "in_flight": self._in_flight + self.ledger.in_flight(),
            "queued": self._queued,
            "batches": c.batches,
            "leases": t.leases,
            "leaseholders": self.ledger.holders(),
            "calls": c.calls + t.calls,
            "requests": c.requests + t.requests,
            "errors": c.errors + t.errors,
            "shared": c.shared,
            "retries": c.retries + t.retries,
            "breaker": self.breaker.state,
            "breaker_failures": self.breaker.fail_count,  # in a row
            "breaker_failure_rate": self.breaker.failure_rate,  # None: an empty window
            "breaker_window_calls": self.breaker.window_calls,
            # batch requests waiting for the probe, here and at leaseholders
            "circuit_waiting": self.breaker.waiting + self.ledger.waiting_for_circuit(),
            "rate_limit_paused_for": self.limiter.paused_for(),
            "prompt_tokens": c.prompt_tokens + t.prompt_tokens,
            "completion_tokens": c.completion_tokens + t.completion_tokens,
            "cost": c.cost + t.cost if self._price is not None else None,
            "requests_per_s": len(c.recent) / RECENT_WINDOW_SECONDS,
            "cpu_seconds": time.process_time(),  # this process's CPU (the actor's, under Ray)
        }

    async def ping(self) -> str:
        """Answers once the actor is up (used to wait for a started pool)."""
        return self.name

    # --- one request -------------------------------------------------------------

    async def _indexed(
        self, index: int, request: PoolRequest, api_key: str | None, credential: str
    ) -> tuple[int, Outcome]:
        return index, await self._outcome(request, api_key, credential)

    async def _outcome(self, request: PoolRequest, api_key: str | None, credential: str) -> Outcome:
        # Errors are returned as values: one failed request must not fail its batch.
        try:
            response = await self._single_flight(request, api_key, credential)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._counters.errors += 1
            return error
        c = self._counters
        c.requests += 1
        now = time.monotonic()
        c.recent.append(now)
        _prune(c.recent, now)  # amortised O(1): keeps the window bounded without stats()
        return response

    async def _single_flight(
        self, request: PoolRequest, api_key: str | None, credential: str
    ) -> LMResponse:
        if request.key is None:
            return await self._execute(request, api_key)
        # Keyed by credential too: a request must not borrow the outcome of another key.
        # And by mode: a batch request must not fail with an interactive leader's
        # fail-fast, nor an interactive one wait behind a batch leader's patience.
        flight = (request.key, credential, request.wait_for_circuit)
        return await self._flights.run(
            flight, lambda: self._execute(request, api_key), on_shared=self._count_shared
        )

    def _count_shared(self) -> None:
        self._counters.shared += 1

    async def _execute(self, request: PoolRequest, api_key: str | None) -> LMResponse:
        return await send_n(
            self._protocol,
            request.params,
            self.config.model,
            lambda params: self._with_retries(request, params, api_key),
        )

    async def _with_retries(
        self, request: PoolRequest, params: dict[str, Any], api_key: str | None
    ) -> LMResponse:
        wait_until = self._circuit_wait_until(request)
        policy = request.retry_policy or RetryPolicy(num_retries=request.num_retries)
        self._queued += 1
        try:
            return await call_with_retries(
                lambda: self._attempt(request, params, api_key, wait_until),
                policy,
                on_retry=self._on_retry,
            )
        finally:
            self._queued -= 1

    def _circuit_wait_until(self, request: PoolRequest) -> float | None:
        """Until when (on the breaker's clock) a batch request may wait for the
        circuit over all its attempts; None: it fails fast (interactive)."""
        if not request.wait_for_circuit:
            return None
        wait = self.config.max_circuit_wait
        if request.deadline is not None:
            wait = min(wait, request.deadline - time.time())
        return self.breaker.clock() + max(0.0, wait)

    async def _attempt(
        self,
        request: PoolRequest,
        params: dict[str, Any],
        api_key: str | None,
        wait_until: float | None,
    ) -> LMResponse:
        while True:
            _time_left(request)
            # Before queueing for rate budget and a slot: an interactive request fails
            # fast; a batch one waits here for the probe, holding neither.
            if wait_until is None:
                self.breaker.check()
            else:
                await self.breaker.wait_until_admissible(wait_until)
            reservation = await self.limiter.acquire(estimate_tokens(request.messages, params))
            try:
                response = await self._admitted_post(request, params, api_key, reservation)
            except CircuitOpenError:
                reservation.cancel()  # nothing was sent
                if wait_until is None:
                    raise
                continue  # another waiter took the probe, or the circuit opened: wait again
            reservation.settle(response.usage.total_tokens)
            self._account(response.usage)
            return response

    async def _admitted_post(
        self,
        request: PoolRequest,
        params: dict[str, Any],
        api_key: str | None,
        reservation: Reservation,
    ) -> LMResponse:
        """One HTTP call within a slot, if the breaker admits it now. It never waits
        here: a request waiting for the circuit must not hold a slot others need."""
        try:
            async with self._slots:
                try:
                    timeout = _time_left(request)  # the wait for budget and a slot counts too
                except LMTimeoutError:
                    reservation.cancel()  # nothing was sent
                    raise
                return await self.breaker.call(
                    lambda: self._post(request.messages, params, api_key, timeout)
                )
        except CircuitOpenError:
            raise  # the caller cancels the reservation: nothing was sent
        except LMRateLimitError as error:
            if error.retry_after:
                self.limiter.pause(error.retry_after)  # the whole pool backs off, not one call
            reservation.settle(None)
            raise
        except BaseException:
            reservation.settle(None)  # no-op if already cancelled
            raise

    async def _post(
        self,
        messages: Sequence[Message],
        params: dict[str, Any],
        api_key: str | None,
        timeout: float,
    ) -> LMResponse:
        self._queued -= 1
        self._in_flight += 1
        try:
            response = await post_once(
                self._protocol,
                self._endpoint,
                messages,
                params,
                api_key=api_key,
                transport=self._transport,
                timeout=timeout,
            )
        finally:
            self._in_flight -= 1
            self._queued += 1
            self._counters.calls += 1
        return priced(response, self._price)

    # --- bookkeeping -----------------------------------------------------------

    def _account(self, usage: Usage) -> None:
        c = self._counters
        c.prompt_tokens += usage.prompt_tokens
        c.completion_tokens += usage.completion_tokens
        c.cost += usage.cost or 0.0

    def _on_retry(self, attempt: int, error: BaseException, delay: float) -> None:
        self._counters.retries += 1
        logger.debug(
            "%s: attempt %d failed (%s), retrying in %.2fs",
            self.name,
            attempt + 1,
            type(error).__name__,
            delay,
        )

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        logger.warning("%s: circuit breaker %s -> %s", self.name, old, new)
        _emit_event(
            "breaker.state",
            self.name,
            model=self.config.model,
            old=old,
            new=new,
            retry_after=self.breaker.retry_after(),
        )


def _time_left(request: PoolRequest) -> float:
    """The HTTP timeout for the next attempt; a passed deadline fails without retrying."""
    if request.deadline is None:
        return request.timeout
    left = request.deadline - time.time()
    if left <= 0:
        error = LMTimeoutError("the request's deadline passed before it could be sent")
        error.retryable = False  # retrying cannot bring the deadline back
        raise error
    return min(request.timeout, left)


def _credential_id(api_key: str | None) -> str:
    # A digest, so single-flight can tell keys apart without holding them in its map.
    if not api_key:
        return ""
    return hashlib.blake2b(api_key.encode(), digest_size=16).hexdigest()


def _prune(recent: deque[float], now: float) -> None:
    horizon = now - RECENT_WINDOW_SECONDS
    while recent and recent[0] < horizon:
        recent.popleft()


def _emit_event(kind: str, source: str, **data: Any) -> None:
    try:
        from dspex.runtime.supervision.events import connect_event_log, emit
    except ImportError:
        return  # the event bus is optional: pools work without the supervision tree
    try:
        # Forward to the cluster's event log when there is one (False, cheaply, without
        # Ray). Breaker transitions are rare, so the lookup's round trip does not matter.
        connect_event_log()
        emit(kind, source, **data)
    except Exception:
        logger.exception("dspex: emitting a %s event failed", kind)


__all__ = ["Outcome", "PoolConfig", "PoolRequest", "ProviderPool"]
