"""`LM`: the language-model client every dspex module calls.

    lm = LM("openai/gpt-4o-mini", temperature=0.0)
    lm("Say hi")                                   # -> ["Hi!"]
    await lm.acomplete([{"role": "user", "content": "Say hi"}], n=3)

One request goes: cache lookup -> single-flight (identical concurrent requests
share one call) -> dispatch -> protocol encodes -> transport posts (behind the
optional per-process concurrency semaphore) -> protocol decodes or raises a typed
`LMError` -> retries on retryable errors -> cache store -> usage, history and
request hooks. The steps after dispatch are `dspex.clients.pipeline`, which the
runtime's provider pools run too.

Dispatch. With no dispatcher installed the request is made in this process.
The runtime installs one (`dspex.clients.dispatch`) that sends cache-missed
requests to the endpoint's provider pool; the cache, single-flight and the run
budget stay in front of it, in the caller's process.

Budgets. Inside a run with ``max_lm_calls=``/``max_cost=`` every HTTP request
(each retry too) reserves its claim from the active budget right before it is
sent, and is not sent when the claim does not fit (`dspex.clients.budget`).
A cache hit never reaches that point, so it costs nothing.

API keys. The key is a secret: it never appears in ``repr``, ``dump_state``,
history, hooks, cache keys or pickles. An explicit ``api_key=`` is kept in a
module-level registry under a random token; the LM holds only the token. So an
LM pickled and unpickled in the same process keeps working, and one unpickled
in another process (a Ray worker) reads the key from the provider's
environment variable there (``OPENAI_API_KEY``/``ANTHROPIC_API_KEY``): give
workers the key through their environment (Ray ``runtime_env``), not inside the
pickled program.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from dspex.clients import fallback, finetune
from dspex.clients.anthropic_protocol import AnthropicProtocol
from dspex.clients.base_lm import LM_CLASS_STATE_KEY, as_messages, complete_through_call
from dspex.clients.budget import Budget, Claim, active_budget
from dspex.clients.cache import CachedValue, LMCache, cache_key, get_cache
from dspex.clients.dispatch import Dispatcher, current_dispatcher
from dspex.clients.finetune import TrainingJob
from dspex.clients.history import make_entry, record
from dspex.clients.openai_protocol import OpenAIProtocol
from dspex.clients.pipeline import ChatProtocol, Endpoint, post_once, priced, send_n
from dspex.clients.pricing import Price, cost_usd, lookup_price, worst_case_cost
from dspex.clients.retry import RetryPolicy, call_with_retries
from dspex.clients.single_flight import loop_single_flight
from dspex.clients.transport import Transport
from dspex.clients.types import LMResponse, Message, Usage
from dspex.clients.usage import record_usage
from dspex.errors import CircuitOpenError, ConfigurationError, LMError, UnsupportedMediaError
from dspex.observability.hooks import lm_request_hooks, observed_lm_call
from dspex.privacy.session import redacted_lm_call

logger = logging.getLogger(__name__)

PROTOCOLS: dict[str, ChatProtocol] = {
    "openai": OpenAIProtocol(),
    "anthropic": AnthropicProtocol(),
}

request_hooks: list[Callable[[dict[str, Any]], None]] = lm_request_hooks
"""`dspex.observability.hooks.lm_request_hooks` (one list, two names). Called after
every request with a secret-free dict: model, provider, latency, usage, cached, error
(exception type name or None), status. Keep hooks cheap: they run inline on the
request's event loop; an exception in one is logged."""

_KEYS: dict[str, str] = {}  # token -> explicitly given API key (never pickled)
_SECRET_PARAMS = frozenset({"api_key", "api_base", "base_url"})
_semaphores: dict[asyncio.AbstractEventLoop, dict[tuple[Any, ...], asyncio.Semaphore]] = {}


def parse_model(model: str) -> tuple[str, str]:
    """``"provider/name"`` -> (provider, name); a bare name is an OpenAI-protocol model."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"LM model must be a non-empty string like 'openai/gpt-4o-mini', got {model!r}"
        )
    provider, sep, name = model.partition("/")
    if not sep:
        return "openai", model
    if provider not in PROTOCOLS or not name:
        raise ConfigurationError(
            f"unknown LM provider {provider!r} in model {model!r}: use one of "
            f"{', '.join(repr(p + '/<model>') for p in PROTOCOLS)} (any OpenAI-compatible "
            "server, e.g. vLLM or Ollama, is 'openai/<model>' with api_base=...)"
        )
    return provider, name


class LM:
    """A language model behind an HTTP API (OpenAI Chat Completions or Anthropic Messages).

    ``fallbacks=[LM(...), ...]``: LMs asked in order, with the same messages, when this
    one's provider fails a request after its retries or its circuit is open; the answer
    names the model that gave it (see `dspex.clients.fallback`)."""

    #: every request this client sends reserves from the active run budget itself
    #: (Predict reserves on behalf of LM objects that do not)
    reserves_budget = True
    #: every request this client makes is added to the active usage trackers by the
    #: client itself (Predict reports on behalf of LM objects that do not)
    records_usage = True

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        timeout: float = 60.0,
        rollout_id: Any = None,
        transport: Transport | None = None,
        price: Price | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int | None = None,
        fallbacks: Sequence[LM] | None = None,
        **kwargs: Any,
    ) -> None:
        self.provider, self.model_name = parse_model(model)
        self.model = model
        # DSPy spells it base_url in places; accept both, keep one.
        api_base = api_base or kwargs.pop("base_url", None)
        model_type = kwargs.pop("model_type", "chat")
        if model_type != "chat":
            raise ConfigurationError(
                f"LM(model_type={model_type!r}): only 'chat' models are supported"
            )
        self.api_base = api_base
        self.kwargs: dict[str, Any] = _without_none(
            {"temperature": temperature, "max_tokens": max_tokens, **kwargs}
        )
        _check_params(self.kwargs)
        self.cache = cache
        self.timeout = timeout
        self.rollout_id = rollout_id
        self.transport = transport
        self.price = price
        self.rpm, self.tpm, self.max_concurrency = rpm, tpm, max_concurrency
        self.retry_policy = RetryPolicy(num_retries=num_retries)
        # Asked in order when this LM's provider fails (`dspex.clients.fallback`).
        self.fallbacks: tuple[LM, ...] = fallback.resolve_fallbacks(model, fallbacks)
        self._key_token: str | None = None
        if api_key is not None:
            self._key_token = secrets.token_hex(16)
            _KEYS[self._key_token] = api_key
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        # Per-process state: rebuilt after unpickling, never shipped to workers.
        self._protocol = PROTOCOLS[self.provider]
        self._price = self.price if self.price is not None else lookup_price(self.model_name)
        # Bounded by the max_history_size setting as entries are recorded.
        self.history: list[dict[str, Any]] = []
        self._usage = Usage()
        self._usage_lock = threading.Lock()

    # --- public API ---------------------------------------------------------

    @property
    def num_retries(self) -> int:
        return self.retry_policy.num_retries

    @property
    def usage(self) -> Usage:
        """Running totals of this LM's calls in this process (cache hits add nothing)."""
        return self._usage

    @property
    def supports_function_calling(self) -> bool:
        """Both wire protocols carry native tools (``tools=[...]`` in a request, tool calls
        in the reply), so adapters may send a signature's tools natively."""
        return True

    @property
    def protocol(self) -> ChatProtocol:
        """The provider's wire format (encodes requests, decodes answers and errors)."""
        return self._protocol

    @property
    def resolved_price(self) -> Price | None:
        """The price requests are charged at: ``price=``, else the price table's entry
        for the model, else None (cost unknown)."""
        return self._price

    def endpoint(self) -> Endpoint:
        """Where this LM's requests go, resolved now (``api_base=``, else the provider's
        base-URL environment variable, else its public API). Holds no secret."""
        return Endpoint(self.provider, self.model, self.model_name, self._api_base())

    def credential(self) -> str | None:
        """The API key requests are sent with: ``api_key=`` (kept out of pickles), else
        the provider's key variable in this process's environment. A secret: pass it
        only to where the request is made, never to logs, events or storage."""
        return self._api_key()

    @redacted_lm_call  # with redactors configured, nothing below sees personal data
    @observed_lm_call  # call observers (DSPy-style callbacks) see each LM call
    async def acomplete(self, messages: Sequence[Message], **kwargs: Any) -> LMResponse:
        """Send one chat request. kwargs override request params for this call;
        ``cache=`` and ``rollout_id=`` too. ``n > 1`` returns n outputs.

        A subclass that overrides ``__call__`` is answered by it (in a worker thread), as
        DSPy calls every LM: the subclass decides what each request returns."""
        if type(self).__call__ is not LM.__call__:
            return await complete_through_call(self, messages, kwargs)
        if self.fallbacks:
            return await fallback.complete_with_fallbacks(self, messages, kwargs)
        return await self._complete(messages, kwargs)

    async def _complete(
        self,
        messages: Sequence[Message],
        kwargs: dict[str, Any],
        *,
        record_in: Sequence[list[dict[str, Any]]] = (),
        note: list[dict[str, Any]] | None = None,
    ) -> LMResponse:
        """One request of this LM alone: cache, pipeline, then usage, history and hooks.
        ``record_in``: more histories for its entry (the LM a fallback answered for);
        ``note``: the LMs that failed before this one (``entry["fallback_from"]``)."""
        use_cache = kwargs.pop("cache", self.cache)
        rollout_id = kwargs.pop("rollout_id", self.rollout_id)
        params = self.kwargs
        if kwargs:
            _check_params(kwargs)
            params = _without_none({**self.kwargs, **kwargs})
        start = time.perf_counter()
        try:
            if use_cache:
                response = await self._cached_request(messages, params, rollout_id)
            else:
                response = await self._request(messages, params)
        except Exception as error:
            if isinstance(error, LMError) and error.model is None:
                error.model = self.model
            if request_hooks:
                self._emit(time.perf_counter() - start, None, error)
            raise
        self._finish(
            messages, params, rollout_id, response, time.perf_counter() - start, record_in, note
        )
        return response

    def complete(self, messages: Sequence[Message], **kwargs: Any) -> LMResponse:
        """Sync `acomplete`, runnable from any thread or from inside a running loop."""
        from dspex.utils.aio import run_sync

        return run_sync(self.acomplete(messages, **kwargs))

    async def acall(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        """DSPy-style call: the output texts for a prompt or a message list."""
        response = await self.acomplete(as_messages(prompt, messages), **kwargs)
        return response.outputs

    def __call__(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        return self.complete(as_messages(prompt, messages), **kwargs).outputs

    def finetune(
        self,
        train_data: list[dict[str, Any]],
        train_data_format: Any = None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> TrainingJob:
        """Fine-tune this model on chat examples (``[{"messages": [...]}, ...]``) through the
        provider's fine-tuning API; returns a `TrainingJob` whose ``result()`` is an LM for
        the new model. ``train_kwargs`` go into the job request (``hyperparameters``,
        ``suffix``), except ``poll_interval`` and ``timeout`` (seconds), which pace the
        polling here. ``train_data_format`` is accepted for DSPy (chat is the only one).
        Raises `FinetuneNotSupportedError` at once when this LM cannot be fine-tuned."""
        del train_data_format
        return finetune.start(self, train_data, train_kwargs)

    def copy(self, **overrides: Any) -> LM:
        """A new LM with the same settings (and key) except ``overrides``; fresh history/usage."""
        if overrides.get("fallbacks"):  # saved states keep the endpoints given in code
            overrides["fallbacks"] = fallback.resolve_fallbacks(
                overrides.get("model", self.model), overrides["fallbacks"], self.fallbacks
            )
        config = {**self._config(), **overrides}
        params = {**self.kwargs}
        for name in list(config):
            if name not in _CONSTRUCTOR_ARGS:
                params[name] = config.pop(name)
        new = LM(**config, **params)
        if "api_key" not in overrides:
            new._key_token = self._key_token
        if "num_retries" not in overrides:
            new.retry_policy = self.retry_policy
        return new

    def dump_state(self) -> dict[str, Any]:
        """Model and settings, for saving a program; never the API key or API base. Names
        the class under ``LM_CLASS_STATE_KEY`` as every LM state does."""
        state = {k: v for k, v in self._config().items() if k not in ("api_base", "transport")}
        # Each fallback as its own state: model and settings, never its key or endpoint.
        state["fallbacks"] = [lm.dump_state() for lm in self.fallbacks]
        if not state["fallbacks"]:
            del state["fallbacks"]
        marker = {LM_CLASS_STATE_KEY: f"{LM.__module__}.{LM.__qualname__}"}
        return {**marker, **state, **self.kwargs}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LM:
        """An LM rebuilt from `dump_state` output (without an endpoint or key)."""
        return cls.from_state(state)

    @classmethod
    def from_state(cls, state: dict[str, Any], **overrides: Any) -> LM:
        """Rebuild an LM from `dump_state` output (pass ``api_base=``/``api_key=`` again if needed)."""
        return cls(**{**{k: v for k, v in state.items() if k != LM_CLASS_STATE_KEY}, **overrides})

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> None:
        """Print this LM's last ``n`` calls (see `dspex.inspect_history`)."""
        from dspex.clients.history import inspect_history

        inspect_history(n, history=self.history, file=file)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        if self.fallbacks:
            params += f"{', ' if params else ''}fallbacks={list(self.fallbacks)!r}"
        return f"LM(model={self.model!r}{', ' + params if params else ''})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_protocol", "_price", "history", "_usage", "_usage_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.setdefault("fallbacks", ())  # pickled before fallbacks existed
        self.__dict__.update(state)
        self._init_runtime_state()

    # --- internals ----------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api_base": self.api_base,
            "cache": self.cache,
            "num_retries": self.num_retries,
            "timeout": self.timeout,
            "rollout_id": self.rollout_id,
            "transport": self.transport,
            "price": self.price,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrency": self.max_concurrency,
            "fallbacks": self.fallbacks,
        }

    def _api_key(self) -> str | None:
        if self._key_token is not None:
            key = _KEYS.get(self._key_token)
            if key is not None:
                return key
        from os import environ

        return environ.get(self._protocol.api_key_env)

    def _api_base(self) -> str:
        if self.api_base:
            return self.api_base
        from os import environ

        for name in self._protocol.api_base_envs:
            value = environ.get(name)
            if value:
                return value
        return self._protocol.default_api_base

    async def _cached_request(
        self, messages: Sequence[Message], params: dict[str, Any], rollout_id: Any
    ) -> LMResponse:
        cache = get_cache()
        key = cache_key(
            provider=self.provider,
            model=self.model_name,
            messages=messages,
            params=params,
            rollout_id=rollout_id,
        )
        value = cache.get(key)
        if value is not None:
            return _from_cache(value, self.model)
        return await self._single_flight(key, cache, messages, params)

    async def _single_flight(
        self, key: str, cache: LMCache, messages: Sequence[Message], params: dict[str, Any]
    ) -> LMResponse:
        async def call() -> LMResponse:
            response = await self._request(messages, params, key)
            cache.put(key, _to_cache(response))  # before followers wake: they may re-ask
            return response

        return await loop_single_flight().run(key, call)

    async def _request(
        self, messages: Sequence[Message], params: dict[str, Any], key: str | None = None
    ) -> LMResponse:
        dispatcher = current_dispatcher()
        if dispatcher is not None:  # the runtime's: the endpoint's provider pool calls
            budget = active_budget()
            if budget is None:
                return await dispatcher.send(self, messages, params, key)
            return await self._dispatched_within_budget(dispatcher, budget, messages, params, key)
        return await send_n(
            self._protocol, params, self.model, lambda p: self._request_once(messages, p)
        )

    async def _request_once(
        self, messages: Sequence[Message], params: dict[str, Any]
    ) -> LMResponse:
        endpoint = self.endpoint()
        api_key = self._api_key()
        semaphore = self._semaphore() if self.max_concurrency else None
        budget = active_budget()
        claim = None if budget is None else self._claim(budget, messages, params, calls=1)

        async def send() -> LMResponse:
            return await post_once(
                self._protocol,
                endpoint,
                messages,
                params,
                api_key=api_key,
                transport=self.transport,
                timeout=self.timeout,
            )

        async def post() -> LMResponse:
            # Reserved here, after any wait for a concurrency slot: a queued request
            # must not hold budget that a request ready to go could use.
            if budget is None or claim is None:
                return await send()
            return await _spend(budget, claim, send, self._price)

        async def attempt() -> LMResponse:
            if semaphore is None:
                return await post()
            async with semaphore:
                return await post()

        guarded = fallback.guarded(self, attempt)  # an endpoint circuit before a fallback
        return priced(await call_with_retries(guarded, self.retry_policy), self._price)

    async def _dispatched_within_budget(
        self,
        dispatcher: Dispatcher,
        budget: Budget,
        messages: Sequence[Message],
        params: dict[str, Any],
        key: str | None,
    ) -> LMResponse:
        # A dispatcher's target retries out of this budget's sight, so under a budget it
        # makes one attempt per request and the retries happen here, each reserved again.
        n = params.get("n", 1)
        sends = n if n > 1 and not self._protocol.supports_n else 1
        shape = params if sends == 1 else {k: v for k, v in params.items() if k != "n"}
        claim = self._claim(budget, messages, shape, calls=sends)

        async def send() -> LMResponse:
            return await dispatcher.send(self, messages, params, key, num_retries=0)

        async def attempt() -> LMResponse:
            return await _spend(budget, claim, send, self._price)

        return await call_with_retries(attempt, self.retry_policy)

    def _claim(
        self, budget: Budget, messages: Sequence[Message], params: dict[str, Any], *, calls: int
    ) -> Claim:
        """What ``calls`` requests shaped like ``params`` reserve: their worst-case cost too
        when the budget limits cost."""
        if not budget.limits_cost:
            return Claim(calls, 0.0)
        max_tokens = self.require_cost_bound(params)
        per_call = worst_case_cost(self._price, messages, params, max_tokens, params.get("n", 1))
        return Claim(calls, per_call * calls)

    def require_cost_bound(self, params: dict[str, Any] | None = None) -> int:
        """The max_tokens that bounds a request's cost (``params`` override the LM's);
        raises ConfigurationError when a ``max_cost=`` budget could not be held."""
        params = self.kwargs if params is None else params
        if self._price is None:
            raise ConfigurationError(
                f"max_cost= cannot be held for {self.model!r}: its price is unknown. Pass "
                "LM(..., price=(usd_per_1M_input_tokens, usd_per_1M_output_tokens)), or use "
                "max_lm_calls= instead"
            )
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigurationError(
                f"max_cost= needs every request's worst case to be known, but requests to "
                f"{self.model!r} have no max_tokens: set LM(..., max_tokens=...) (or pass "
                "max_tokens in the call's config)"
            )
        return max_tokens

    def _semaphore(self) -> asyncio.Semaphore:
        # Shared by every LM (copies, unpickled clones) of the same model and endpoint,
        # so `lm.copy(rollout_id=i)` does not multiply the allowed concurrency.
        # asyncio primitives belong to one loop, hence one set per loop.
        loop = asyncio.get_running_loop()
        per_loop = _semaphores.get(loop)
        if per_loop is None:
            for old in [lp for lp in _semaphores if lp.is_closed()]:
                del _semaphores[old]
            per_loop = _semaphores[loop] = {}
        key = (self.model, self.api_base, self.max_concurrency)
        semaphore = per_loop.get(key)
        if semaphore is None:
            semaphore = per_loop[key] = asyncio.Semaphore(self.max_concurrency or 1)
        return semaphore

    def _finish(
        self,
        messages: Sequence[Message],
        params: dict[str, Any],
        rollout_id: Any,
        response: LMResponse,
        latency: float,
        record_in: Sequence[list[dict[str, Any]]] = (),
        note: list[dict[str, Any]] | None = None,
    ) -> None:
        usage = response.usage
        if not response.cached:
            with self._usage_lock:
                self._usage = self._usage + usage
        record_usage(self.model, usage, cached=response.cached)
        shown = params if rollout_id is None else {**params, "rollout_id": rollout_id}
        entry = make_entry(
            model=self.model, messages=messages, params=shown, response=response, latency=latency
        )
        if note:
            entry["fallback_from"] = note
        record(entry, self.history, *record_in)
        if request_hooks:
            self._emit(latency, response, None)

    def _emit(
        self, latency: float, response: LMResponse | None, error: BaseException | None
    ) -> None:
        event = {
            "model": self.model,
            "provider": self.provider,
            "latency": latency,
            "usage": response.usage.to_dict() if response is not None else None,
            "cached": response.cached if response is not None else False,
            "error": type(error).__name__ if error is not None else None,
            "status": getattr(error, "status", None) if error is not None else 200,
        }
        for hook in list(request_hooks):
            try:
                hook(event)
            except Exception:
                logger.exception(
                    "dspex: an LM request hook failed (the request itself succeeded or failed on its own)"
                )


_CONSTRUCTOR_ARGS = frozenset(
    {
        "model",
        "api_base",
        "api_key",
        "cache",
        "num_retries",
        "timeout",
        "rollout_id",
        "transport",
        "price",
        "rpm",
        "tpm",
        "max_concurrency",
        "fallbacks",
    }
)


async def _spend(
    budget: Budget, claim: Claim, send: Callable[[], Awaitable[LMResponse]], price: Price | None
) -> LMResponse:
    """Reserve ``claim``, send, then settle to what the request really spent."""
    # Waits while requests in flight hold what it needs; raises BudgetExceededError
    # (nothing is sent) once it cannot fit.
    reservation = await budget.areserve(claim)
    try:
        response = await send()
    except (CircuitOpenError, UnsupportedMediaError):
        # Failed fast (an open circuit, content the protocol cannot carry): nothing was sent.
        reservation.release()
        raise
    except LMError as error:
        # It was sent. Answered with an error status, it produced no billable tokens;
        # unanswered (timeout, dropped connection) it may have: keep the worst case.
        answered = error.status is not None and error.status >= 400
        reservation.settle(Claim(claim.calls, 0.0 if answered else claim.cost))
        raise
    except BaseException:
        reservation.settle(claim)  # cancelled in flight: it may have reached the LM
        raise
    if response.cached:
        reservation.release()  # another request's call answered it (pool single-flight)
    else:
        usage = response.usage
        cost = cost_usd(price, usage.prompt_tokens, usage.completion_tokens)
        reservation.settle(Claim(claim.calls, cost or 0.0))
    return response


def _check_params(params: dict[str, Any]) -> None:
    secret = _SECRET_PARAMS.intersection(params)
    if secret:
        raise ConfigurationError(
            f"{', '.join(sorted(secret))} cannot be a request param: pass it to LM(...) or "
            "lm.copy(...), so it stays out of history, cache keys and saved programs"
        )
    n = params.get("n")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ConfigurationError(f"n must be a positive integer, got {n!r}")


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _to_cache(response: LMResponse) -> CachedValue:
    return {
        "outputs": response.outputs,
        "finish_reasons": response.finish_reasons,
        "model": response.model,
        "usage": {
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
        },
    }


_NO_USAGE = Usage(0, 0, 0, 0.0)


def _from_cache(value: CachedValue, model: str) -> LMResponse:
    # A hit made no call and cost nothing; copies keep callers from editing the cache.
    return LMResponse(
        outputs=[o if isinstance(o, str) else copy.deepcopy(o) for o in value["outputs"]],
        usage=_NO_USAGE,
        model=model,
        cached=True,
        finish_reasons=list(value["finish_reasons"]),
    )
