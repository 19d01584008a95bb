"""Every exception dspex raises on purpose.

Each error says what went wrong and what to do about it. Callers catch the
narrowest class that fits: `LMError` for anything that reached (or failed to
reach) a model provider, `AdapterParseError` for replies that could not be read
into a signature's output fields, and so on.
"""

from __future__ import annotations

from typing import Any


class DspexError(Exception):
    """Base class of every error dspex raises on purpose."""


class ConfigurationError(DspexError):
    """A setting is missing or inconsistent (no LM configured, bad option, ...)."""


class SavedFileError(ConfigurationError):
    """A saved state or program file cannot be read: missing, not valid JSON, the wrong
    kind of file for the call (a state file given to `dspex.load`, a program directory
    given to `Module.load`), from another program, or a pickle that does not load.
    The message names the file, what is wrong with it, and what to do."""


class SignatureError(DspexError):
    """A signature could not be built: bad syntax, names or types."""


class InputError(DspexError, ValueError):
    """A module was called with missing, unexpected or positional inputs."""


class AdapterParseError(DspexError):
    """An LM reply could not be parsed into the signature's output fields.

    Carries the raw reply, the signature and the field that failed, so the
    failure can be inspected or replayed.
    """

    def __init__(
        self,
        message: str,
        *,
        raw_text: str,
        signature: Any,
        field: str | None = None,
        parsed: dict[str, Any] | None = None,
        usage: Any = None,
    ) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.signature = signature
        self.field = field
        self.parsed = parsed or {}
        #: LM usage of the call whose reply could not be parsed (a Usage, when known)
        self.usage = usage


# --- LM errors ------------------------------------------------------------


class LMError(DspexError):
    """A request to a language model failed."""

    #: whether a retry of the same request may succeed
    retryable: bool = False

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.status = status


class LMTransportError(LMError):
    """The request never got an HTTP answer (connection refused, reset, DNS)."""

    retryable = True


class LMTimeoutError(LMError):
    """The provider did not answer within the timeout."""

    retryable = True


class LMProviderError(LMError):
    """The provider answered with an error status."""


class LMRateLimitError(LMProviderError):
    """HTTP 429: the provider asks us to slow down."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class LMServerError(LMProviderError):
    """HTTP 5xx: the provider failed on its side."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = 500,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class LMAuthError(LMProviderError):
    """HTTP 401/403: the API key is missing, wrong or lacks permission."""


class LMBadRequestError(LMProviderError):
    """HTTP 400/404/422: the request itself is wrong; retrying will not help."""


class ContextWindowExceededError(LMBadRequestError):
    """The prompt is longer than the model's context window."""


class LMResponseError(LMError):
    """The provider answered 200 but the body is not a valid completion."""

    retryable = True


class CircuitOpenError(LMError):
    """The provider's circuit breaker is open: calls fail fast until it recovers."""

    def __init__(self, message: str, *, model: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, model=model)
        self.retry_after = retry_after


class BudgetExceededError(DspexError):
    """A run reached its `max_lm_calls` or `max_cost` budget.

    ``needed`` is the claim (calls, worst-case cost) of the request that was
    refused, when one was: a request is refused before it is sent, never after.
    """

    def __init__(self, message: str, *, needed: Any = None) -> None:
        super().__init__(message)
        self.needed = needed


class EvaluationError(DspexError):
    """An evaluation stopped because too many examples failed, or measured nothing
    (every example failed, or the devset was empty)."""

    def __init__(
        self,
        message: str,
        *,
        failures: list[tuple[Any, BaseException]] | None = None,
        records: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        #: (example, exception) pairs, where the evaluator kept the exceptions
        self.failures = failures or []
        #: the per-example failure records (`dspex.evaluate.runner.EvaluationFailure`)
        self.records = records or []
