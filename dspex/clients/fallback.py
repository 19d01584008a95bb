"""Provider fallback: an LM whose request goes to the next LM in line when its provider fails.

    lm = dspex.LM("openai/gpt-4o", fallbacks=[dspex.LM("anthropic/claude-sonnet-4-5")])

A request is asked of the LM first, with its own retries; if it still fails with
an error that says "this provider, not this request" (a retryable error once the
retries are spent, or `CircuitOpenError`), the same messages go to the next LM in
``fallbacks`` (through that LM's own protocol, cache, retries and limits), and so
on. An error that says the request itself is wrong (bad request, auth, context
window) is raised at once: another provider would only hide a bug or a bad key.
When every LM failed, `LMFallbackExhaustedError` lists what each one answered and
chains the last error.

What the caller sees of a fall-through:

- history: the answer's entry names the LM that answered (``entry["model"]``) and
  the ones that failed before it (``entry["fallback_from"]``). It goes into the
  global history, the answering LM's ``history`` *and* the called LM's ``history``
  (the user called that one: ``lm.history[-1]["model"]`` says who answered).
- usage: under the model that answered (``prediction.get_lm_usage()``, usage
  trackers, ``answering_lm.usage``), priced at its price. Failed attempts add none.
- cache: each LM caches under its own key (its model), so once the first LM
  recovers it answers again instead of replaying a fallback's cached answer.
- request hooks: one call per LM asked (the failed ones with their error).
- events: ``lm.fallback`` per fall-through, with ``from_model``, ``to_model``,
  the error's type, status and (redacted) message.

Failing fast. Every LM but the last is asked failing fast (`next_in_line`), so an
open circuit sends the request on instead of making batch work wait for it: through the
runtime's provider pools that is the pool's breaker (each endpoint its own pool
and breaker); in-process, the LM has no breaker of its own, so this module keeps
one per endpoint (`EndpointCircuit`), used only while an LM has a fallback after
it. While a circuit is open its requests go straight to the next LM; after the
circuit's ``reset_timeout`` one request probes the first LM again, and its
success sends traffic back to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from dspex.clients.breaker import counts_as_failure
from dspex.clients.breaker_state import BreakerPolicy, BreakerState, CircuitLogic, Transition
from dspex.errors import CircuitOpenError, ConfigurationError, LMError, LMFallbackExhaustedError
from dspex.observability.events import emit
from dspex.observability.redact import redact

if TYPE_CHECKING:
    from dspex.clients.lm import LM
    from dspex.clients.types import LMResponse, Message

T = TypeVar("T")

logger = logging.getLogger(__name__)

FALLBACK_EVENT = "lm.fallback"
CIRCUIT_EVENT = "breaker.state"  # the kind provider pools emit for their breakers too
MESSAGE_CHARS = 300  # of an error's message in an event or a failure list

# In-process circuits judge one process's traffic, so they open sooner than a pool's
# cluster-wide breaker: a wrong opening costs little here (the next LM answers).
DEFAULT_CIRCUIT_POLICY = BreakerPolicy(fail_max=10, reset_timeout=30.0)
_ENDPOINT_KEYS = frozenset({"api_base", "api_key", "base_url"})

# True while an LM that has a next LM in line is being asked (see `guarded`).
_next_in_line: ContextVar[bool] = ContextVar("dspex_fallback_next_in_line", default=False)


# --- the fallbacks an LM holds -------------------------------------------------------


def resolve_fallbacks(
    primary_model: str, fallbacks: Sequence[Any] | None, current: Sequence[LM] = ()
) -> tuple[LM, ...]:
    """``fallbacks=`` as LM objects. An entry may be an LM or an LM state (`LM.dump_state`
    output, as in a saved program): a state is rebuilt from the LM in ``current`` with the
    same model (keeping the endpoint and key given in code), else from the state alone."""
    from dspex.clients.lm import LM

    if fallbacks is None:
        return ()
    if isinstance(fallbacks, (str, bytes, Mapping)) or not isinstance(fallbacks, Sequence):
        raise ConfigurationError(
            f"LM({primary_model!r}, fallbacks=...) must be a list of dspex.LM objects, "
            f"got {fallbacks!r:.200}"
        )
    resolved: list[LM] = []
    for item in fallbacks:
        if isinstance(item, Mapping):
            item = _from_state(item, current)
        if type(item) is not LM:
            raise ConfigurationError(
                f"LM({primary_model!r}, fallbacks=[...]): each fallback must be a dspex.LM "
                f"(an LM talking to a provider's HTTP API), got {item!r:.200}: write e.g. "
                "fallbacks=[dspex.LM('anthropic/claude-sonnet-4-5', api_key=...)]"
            )
        if item.fallbacks:
            raise ConfigurationError(
                f"LM({primary_model!r}, fallbacks=[...]): the fallback {item.model!r} has "
                "fallbacks of its own; list every fallback, in order, in the first LM's "
                "fallbacks= instead"
            )
        resolved.append(item)
    return tuple(resolved)


def _from_state(state: Mapping[str, Any], current: Sequence[LM]) -> LM:
    from dspex.clients.base_lm import LM_CLASS_STATE_KEY
    from dspex.clients.lm import LM

    # A saved file never chooses where requests go or the key they carry.
    config = {
        k: v for k, v in state.items() if k != LM_CLASS_STATE_KEY and k not in _ENDPOINT_KEYS
    }
    model = config.get("model")
    if not isinstance(model, str):
        raise ConfigurationError(
            f"a saved fallback LM must be an object with a 'model' string, got {state!r:.200}"
        )
    for lm in current:
        if lm.model == model:
            dropped = {name: None for name in lm.kwargs if name not in config}
            return lm.copy(**config, **dropped)
    return LM.from_state(config)


# --- one request through the chain ----------------------------------------------------


def can_fall_through(error: BaseException) -> bool:
    """Whether ``error`` lets a request go on to the next LM: an open circuit, or an error
    a retry could fix (the provider's fault, not the request's)."""
    if isinstance(error, CircuitOpenError):
        return True
    if not isinstance(error, LMError) or not error.retryable:
        return False
    # A stream cut after its consumer saw part of the answer: a second answer would
    # follow the first half of another (dspex.clients.streaming); the consumer decides.
    return not getattr(error, "chunks_delivered", 0)


async def complete_with_fallbacks(
    primary: LM, messages: Sequence[Message], kwargs: dict[str, Any]
) -> LMResponse:
    """Ask ``primary``, then each of its fallbacks in order, until one answers."""
    chain = (primary, *primary.fallbacks)
    failed: list[tuple[LM, LMError]] = []
    for index, lm in enumerate(chain):
        call_kwargs = dict(kwargs)
        if lm is not primary and "rollout_id" not in call_kwargs and primary.rollout_id is not None:
            # `lm.copy(rollout_id=i)` asks for distinct samples: the fallback's too.
            call_kwargs["rollout_id"] = primary.rollout_id
        record_in = () if lm is primary else (primary.history,)
        note = [_failure_note(f, e) for f, e in failed]
        last = index == len(chain) - 1
        try:
            if last:
                return await lm._complete(messages, call_kwargs, record_in=record_in, note=note)
            with _failing_fast():
                return await lm._complete(messages, call_kwargs, record_in=record_in, note=note)
        except LMError as error:
            if not can_fall_through(error):
                if failed:  # a fallback's own fault: say why it was asked at all
                    error.add_note(
                        f"dspex: {lm.model} was asked as a fallback after "
                        + ", ".join(f"{f.model} failed ({type(e).__name__})" for f, e in failed)
                    )
                raise
            failed.append((lm, error))
            if last:
                raise _exhausted(failed) from error
            _announce(primary, lm, chain[index + 1], error)
    raise AssertionError("unreachable: the chain is never empty")


def next_in_line() -> bool:
    """Whether the request being made now has a fallback after it: then an open circuit
    must fail fast (the runtime's pool dispatcher reads this), even in batch work."""
    return _next_in_line.get()


@contextlib.contextmanager
def _failing_fast() -> Iterator[None]:
    # A provider pool's open circuit fails fast rather than making batch work wait for
    # it (see `next_in_line`); in-process requests go through the endpoint's circuit.
    token = _next_in_line.set(True)
    try:
        yield
    finally:
        _next_in_line.reset(token)


def _failure_note(lm: LM, error: LMError) -> dict[str, Any]:
    return {"model": lm.model, "error": type(error).__name__, "status": error.status}


def _message(error: BaseException) -> str:
    return redact(str(error))[:MESSAGE_CHARS]


def _announce(primary: LM, failed: LM, following: LM, error: LMError) -> None:
    logger.info(
        "dspex: %s failed (%s); asking its fallback %s",
        failed.model,
        type(error).__name__,
        following.model,
    )
    emit(
        FALLBACK_EVENT,
        primary.model,
        from_model=failed.model,
        to_model=following.model,
        error=type(error).__name__,
        status=error.status,
        circuit_open=isinstance(error, CircuitOpenError),
        message=_message(error),
    )


def _exhausted(failed: list[tuple[LM, LMError]]) -> LMFallbackExhaustedError:
    failures = [(lm.model, type(error).__name__, _message(error)) for lm, error in failed]
    answers = "; ".join(f"{model}: {kind}: {message}" for model, kind, message in failures)
    last_lm, last_error = failed[-1]
    return LMFallbackExhaustedError(
        f"every LM of the fallback chain failed ({answers}). The providers look down or "
        "overloaded: retry later, or add another fallback on a different provider",
        failures=failures,
        model=last_lm.model,
        status=last_error.status,
        retryable=last_error.retryable,
    )


# --- the in-process circuit of an LM with a fallback after it -----------------------


def guarded(lm: LM, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """``attempt`` (one in-process HTTP attempt of ``lm``) behind ``lm``'s endpoint circuit
    when a fallback comes after ``lm`` in the request's chain; else unchanged."""
    if not _next_in_line.get():
        return attempt
    circuit = circuit_for(lm)

    async def through_circuit() -> T:
        return await circuit.call(attempt)

    return through_circuit


class EndpointCircuit:
    """The circuit of one endpoint in this process (thread-safe, fails fast, never waits).

    The pure `CircuitLogic` the provider pools use, behind a lock: in-process requests
    may come from several threads, each with its own event loop."""

    def __init__(
        self, model: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model = model
        self.clock = clock
        self._logic = CircuitLogic(policy)
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._logic.state(self.clock())

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        with self._lock:
            now = self.clock()
            admission = self._logic.admit(now)
            refusal = None if admission.admitted else self._open_error(now)
        self._announce(admission.transitions)
        if refusal is not None:
            raise refusal
        try:
            result = await attempt()
        except Exception as error:
            self._record(admission.epoch, counts_as_failure(error))
            raise
        except BaseException:
            if admission.probe:
                with self._lock:  # cancelled: no outcome; the next caller may probe
                    self._logic.release_probe(admission.epoch)
            raise
        self._record(admission.epoch, False)
        return result

    def _record(self, epoch: int, failed: bool) -> None:
        with self._lock:
            transitions = self._logic.record(self.clock(), epoch, failed)
        self._announce(transitions)

    def _announce(self, transitions: Sequence[Transition]) -> None:
        for old, new in transitions:
            if new == "open":
                logger.warning("dspex: %s circuit %s -> %s", self.model, old, new)
            emit(
                CIRCUIT_EVENT,
                f"lm:{self.model}",
                model=self.model,
                old=old,
                new=new,
                in_process=True,
            )

    def _open_error(self, now: float) -> CircuitOpenError:
        wait = self._logic.retry_after(now)
        why = self._logic.opened_because or "the provider failed"
        return CircuitOpenError(
            f"{self.model}: circuit open after {why}; asking the next fallback, next probe "
            f"in {wait:.1f}s",
            model=self.model,
            retry_after=wait,
        )


_circuits: dict[tuple[str, str, str], EndpointCircuit] = {}
_circuits_lock = threading.Lock()
_policy = DEFAULT_CIRCUIT_POLICY


def circuit_for(lm: LM) -> EndpointCircuit:
    """``lm``'s endpoint circuit in this process (shared by its copies)."""
    endpoint = lm.endpoint()
    key = (endpoint.provider, endpoint.model_name, endpoint.api_base)
    with _circuits_lock:
        circuit = _circuits.get(key)
        if circuit is None:
            circuit = _circuits[key] = EndpointCircuit(lm.model, _policy)
        return circuit


def configure_circuits(**policy: Any) -> BreakerPolicy:
    """Set the in-process circuits' policy (`BreakerPolicy` fields: ``fail_max``,
    ``reset_timeout``, ``failure_rate_threshold``, ``window``, ``window_seconds``,
    ``minimum_calls``) and start every circuit afresh; no arguments: the defaults.
    Provider pools have their own (``start_pool(lm, reset_timeout=...)``)."""
    global _policy
    new = replace(DEFAULT_CIRCUIT_POLICY, **policy)
    with _circuits_lock:
        _policy = new
        _circuits.clear()
    return new


__all__ = [
    "CIRCUIT_EVENT",
    "DEFAULT_CIRCUIT_POLICY",
    "FALLBACK_EVENT",
    "EndpointCircuit",
    "can_fall_through",
    "circuit_for",
    "complete_with_fallbacks",
    "configure_circuits",
    "guarded",
    "next_in_line",
    "resolve_fallbacks",
]
