"""Every public exception dspex raises on purpose, in one place.

Each error says what went wrong and what to do about it. Catch the narrowest
class that fits; the branches group what a caller handles the same way:

- ``ConfigurationError``: a mistake in how dspex was set up or called (a
  setting, a saved file, where the cluster is). Fix the setup; retrying alone
  will not help.
- ``LMError``: a request to a language model failed or was refused. Its
  ``retryable`` says whether the same request may succeed later.
- ``OptimizationError``: an optimizer could not produce a program.
- ``RemoteProgramError``: the user's own program (or metric) raised in another
  process; its type, message and traceback travel as text.
- ``CodeInterpreterError``: the Python sandbox (`dspex.PythonInterpreter`) could
  not run code. Its ``CodeExecutionError`` branch is the code's own fault (an
  exception or a syntax error, with the traceback text an LM can repair from);
  the others are the sandbox's (a timeout, a crash, no Deno or Pyodide).
- ``DspexRuntimeError``: the actor runtime failed while running (a worker,
  replica or coordinator died or did not answer). Mistakes in starting or
  reaching the runtime are ``ConfigurationError``s instead.

The hierarchy (``+`` marks an extra base class)::

    DspexError
    ├── ConfigurationError               + ValueError
    │   ├── UnknownSettingError          + AttributeError
    │   ├── SavedFileError
    │   │   ├── StateMismatchError       + KeyError
    │   │   └── SavedProgramImportError  + ModuleNotFoundError
    │   ├── PickleNotAllowedError        + ValueError
    │   ├── SettingsOwnerError           + RuntimeError
    │   ├── RuntimeNotRunningError
    │   ├── ClusterUnreachableError
    │   ├── ClusterAuthError
    │   ├── DashboardError
    │   ├── EmbeddingDimensionError
    │   ├── EmptyCorpusError
    │   └── NoRetrieverError
    ├── SignatureError                   + ValueError
    │   └── SignatureTypeError           + TypeError
    ├── InputError                       + ValueError
    ├── InputKeysNotSetError             + ValueError
    ├── MissingScoreError                + ValueError
    ├── ValueParseError                  + ValueError
    ├── MediaError                       + ValueError
    │   ├── MediaFileNotFoundError       + FileNotFoundError
    │   ├── MediaFetchError
    │   ├── MediaTypeError
    │   └── UnsupportedMediaError
    ├── AdapterParseError
    ├── LMError
    │   ├── LMTransportError
    │   │   └── LMStreamInterruptedError
    │   ├── LMTimeoutError
    │   ├── LMProviderError
    │   │   ├── LMRateLimitError
    │   │   ├── LMServerError
    │   │   ├── LMAuthError
    │   │   ├── LMBadRequestError
    │   │   │   └── ContextWindowExceededError
    │   │   └── RetrievalServerError     + ValueError
    │   ├── LMResponseError
    │   ├── CircuitOpenError
    │   └── LMFallbackExhaustedError
    ├── BudgetExceededError
    ├── EvaluationError
    ├── ParallelExecutionError           + RuntimeError
    ├── AssertionFailedError             + AssertionError
    ├── FinetuneError
    │   └── FinetuneNotSupportedError    + ConfigurationError
    ├── CodeRepairError                  + RuntimeError
    ├── ToolError
    │   ├── ToolArgumentError            + ValueError
    │   ├── ToolNotFoundError            + ValueError
    │   └── ToolExecutionError           + RuntimeError
    ├── CodeInterpreterError             + RuntimeError
    │   ├── CodeExecutionError
    │   │   └── CodeSyntaxError          + SyntaxError
    │   ├── InterpreterTimeoutError      + TimeoutError
    │   ├── InterpreterCrashedError
    │   ├── InterpreterUnavailableError
    │   └── SandboxInstallError          + ConfigurationError
    ├── OptimizationError
    │   ├── BootstrapError
    │   ├── SearchError                  (also named SearchFailedError)
    │   ├── TrialFailedError
    │   └── RunCancelledError
    ├── RemoteProgramError
    │   └── RemoteExampleError
    ├── DspexRuntimeError
    │   ├── SupervisorError
    │   │   ├── InvalidChildSpecError    + ConfigurationError, ValueError
    │   │   ├── ChildStartError
    │   │   ├── ChildNotFoundError
    │   │   ├── ChildAlreadyExistsError
    │   │   ├── ChildRunningError
    │   │   ├── SupervisorStoppedError
    │   │   ├── ServiceRestartedError
    │   │   │   └── ReplicaDiedError
    │   │   ├── ReplicaDrainingError
    │   │   ├── ServiceUpdateError
    │   │   └── ServiceUnavailableError
    │   ├── WorkerLostError
    │   └── CoordinatorUnavailableError
    ├── SimLMRequestError                + ValueError
    └── CliError

Errors raised inside actors and caught in the driver (the supervision tree's,
the remote program's, the optimizers') pickle with their attributes: their facts
are constructor arguments kept in ``args`` (or rebuilt by ``__reduce__``).
The modules that raise an error also re-export it under its old import path
(``dspex.runtime.serve.ReplicaDiedError`` is ``dspex.errors.ReplicaDiedError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DspexError(Exception):
    """Base class of every error dspex raises on purpose."""


class ConfigurationError(DspexError, ValueError):
    """A setting is missing or inconsistent (no LM configured, bad option, ...).

    Also a ``ValueError``, the class DSPy raises for these mistakes, so code written
    for DSPy (``except ValueError``) keeps catching them."""


class SavedFileError(ConfigurationError):
    """A saved state or program file cannot be read: missing, not valid JSON, the wrong
    kind of file for the call (a state file given to `dspex.load`, a program directory
    given to `Module.load`), from another program, or a pickle that does not load.
    The message names the file, what is wrong with it, and what to do."""


class StateMismatchError(SavedFileError, KeyError):
    """A saved state does not fit the program it is loaded into: a predictor has no
    entry, an entry names no predictor, or an entry lacks a required key. Also a
    KeyError, as DSPy raises one there. Nothing was changed by the failed load."""

    # KeyError would show the message quoted like a key; show it as written.
    __str__ = BaseException.__str__


class SavedProgramImportError(SavedFileError, ModuleNotFoundError):
    """A saved whole program refers to a module that cannot be imported here (a class
    pickled by reference). Save it again with ``modules_to_serialize=[that_module]``,
    or make the module importable where it is loaded."""

    def __init__(self, *args: object, name: str | None = None, path: str | None = None) -> None:
        # ValueError (through ConfigurationError) comes first in the MRO and takes no
        # keywords: ImportError's own initialiser keeps ``name`` and ``path``.
        ImportError.__init__(self, *args, name=name, path=path)


class PickleNotAllowedError(ConfigurationError, ValueError):
    """Loading a pickle (a whole program, a ``.pkl`` state, saved settings) was asked for
    without ``allow_pickle=True``; unpickling runs any code the file holds. Also a
    ValueError, as in DSPy."""


class SettingsOwnerError(ConfigurationError, RuntimeError):
    """``dspex.configure`` was called from a thread (or asyncio task) other than the one
    that configured first. Use ``with dspex.context(...)`` there. Also a RuntimeError,
    as in DSPy."""


class UnknownSettingError(ConfigurationError, AttributeError):
    """A setting name that dspex does not know (also an AttributeError for getattr)."""


class RuntimeNotRunningError(ConfigurationError):
    """No dspex runtime (root supervisor) runs on the cluster, or Ray is not connected."""


class ClusterUnreachableError(ConfigurationError):
    """No Ray cluster answered at the given address."""


class ClusterAuthError(ConfigurationError):
    """The cluster wants a Ray auth token and none was found, or it rejected the one sent."""


class DashboardError(ConfigurationError):
    """The dashboard cannot start as asked (a host it must not serve on, a port in use)."""


class EmbeddingDimensionError(ConfigurationError):
    """Embeddings of different lengths met: a query embedded by another model (or with
    another ``dimensions=``) than the index, or an embedder whose batches disagree."""


class EmptyCorpusError(ConfigurationError):
    """A retriever was given no passages to search."""


class NoRetrieverError(ConfigurationError):
    """`dspex.Retrieve` ran with no retrieval model configured (``dspex.configure(rm=...)``)."""


class SignatureError(DspexError, ValueError):
    """A signature could not be built: bad syntax, names or types.

    Also a ValueError, the builtin DSPy raises for the same mistakes, so code
    written for DSPy (``except ValueError``) catches it unchanged.
    """


class SignatureTypeError(SignatureError, TypeError):
    """A signature class declares something that is not a field of the right kind
    (an annotation without ``InputField()``/``OutputField()``); also a TypeError,
    as in DSPy."""


class InputError(DspexError, ValueError):
    """A module was called with missing, unexpected or positional inputs."""


class InputKeysNotSetError(DspexError, ValueError):
    """`Example.inputs()` / `labels()` was called before `with_inputs(...)`."""


class MissingScoreError(DspexError, ValueError):
    """A numeric operation was applied to a Prediction that has no ``score`` field."""


class ValueParseError(DspexError, ValueError):
    """A section of an LM reply is not a valid value of its field's type.

    The adapters catch it and raise `AdapterParseError`, which names the field and
    keeps the whole reply; it reaches a caller directly only from
    ``dspex.adapters.values.parse_value``.
    """


class MediaError(DspexError, ValueError):
    """An image, audio clip or file (`dspex.Image`, `dspex.Audio`, `dspex.File`) could
    not be made from what was given, or cannot be sent where it was going."""


class MediaFileNotFoundError(MediaError, FileNotFoundError):
    """``from_path`` was given a path that is not a readable file."""


class MediaFetchError(MediaError):
    """``from_url`` could not download the resource: the host did not answer, the
    request timed out, the server answered with an error status, or the body was
    larger than allowed. ``url`` is the address (without its query string) and
    ``status`` the HTTP status when there was one."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class MediaTypeError(MediaError):
    """The content is not of the kind asked for: bytes that are not an image given to
    `dspex.Image`, a non-audio file given to `dspex.Audio`, a malformed data URI."""


class UnsupportedMediaError(MediaError):
    """A protocol cannot carry this content (audio to Anthropic's Messages API, a
    ``gs://`` image URL to a provider that cannot fetch it)."""


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
        adapter_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.signature = signature
        self.field = field
        self.parsed = parsed or {}
        #: LM usage of the call whose reply could not be parsed (a Usage, when known)
        self.usage = usage
        #: class name of the adapter that failed ("ChatAdapter"), when known
        self.adapter_name = adapter_name

    # DSPy's names for the same facts.
    @property
    def lm_response(self) -> str:
        return self.raw_text

    @property
    def parsed_result(self) -> dict[str, Any]:
        return self.parsed


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


class LMStreamInterruptedError(LMTransportError):
    """A streamed answer stopped before its end (the connection closed before the final
    event, or ``[DONE]``): what arrived is not the whole answer, so it is never used as one.

    Retryable: the same request may stream to the end next time. dspex's own retries
    make a new attempt only while no chunk of the answer has reached the consumer
    (``chunks_delivered == 0``); after that the consumer has seen part of an answer
    and must decide, so the error is raised to it.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = None,
        chunks_delivered: int = 0,
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.chunks_delivered = chunks_delivered


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


class RetrievalServerError(LMProviderError, ValueError):
    """A retrieval server (ColBERTv2) answered with an error of its own, or with a body
    that has no results in it. Not retried: the same query gets the same answer."""


class LMResponseError(LMError):
    """The provider answered 200 but the body is not a valid completion."""

    retryable = True


class CircuitOpenError(LMError):
    """The provider's circuit breaker is open: calls fail fast until it recovers."""

    def __init__(self, message: str, *, model: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, model=model)
        self.retry_after = retry_after


class LMFallbackExhaustedError(LMError):
    """An LM and every one of its ``fallbacks=`` failed a request, each with an error that
    let it fall through (retryable after its retries, or an open circuit).

    ``failures``: one ``(model, error type name, message)`` per LM, in the order they
    were asked; the last LM's error is chained as ``__cause__``. ``retryable`` and
    ``status`` are the last LM's: the same request may succeed once a provider recovers.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: Sequence[tuple[str, str, str]] = (),
        model: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.failures = [tuple(f) for f in failures]
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles with its facts (a Ray worker's error reaching the driver).
        return (
            _rebuild_fallback_error,
            (str(self), self.failures, self.model, self.status, self.retryable),
        )


def _rebuild_fallback_error(
    message: str,
    failures: Sequence[tuple[str, str, str]],
    model: str | None,
    status: int | None,
    retryable: bool,
) -> LMFallbackExhaustedError:
    return LMFallbackExhaustedError(
        message, failures=failures, model=model, status=status, retryable=retryable
    )


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


class ParallelExecutionError(DspexError, RuntimeError):
    """`dspex.Parallel` or `Module.batch` stopped: ``max_errors`` calls failed (the first
    failure is the ``__cause__``). Also a RuntimeError, as DSPy's executor raises."""

    def __init__(self, message: str, *, failed: list[int] | None = None) -> None:
        super().__init__(message)
        #: indexes of the calls that failed before the rest were cancelled
        self.failed = failed or []

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_parallel_error, (str(self), self.failed))


def _rebuild_parallel_error(message: str, failed: list[int]) -> ParallelExecutionError:
    return ParallelExecutionError(message, failed=failed)



class FinetuneError(DspexError):
    """A fine-tuning job (``LM.finetune``, `BootstrapFinetune`) failed: the upload, the
    job's creation, or the job itself (its status and the provider's reason say which)."""


class FinetuneNotSupportedError(FinetuneError, ConfigurationError):
    """The LM or its server cannot fine-tune (a provider without a fine-tuning API, a
    server without ``/files``); raised before any long work starts."""


class AssertionFailedError(DspexError, AssertionError):
    """A ``dspex.Assert`` check still failed after the re-runs it was allowed.

    ``messages`` holds every failed check's message in order (the last is this one's);
    ``backtracks`` how many times the program was re-run with them as feedback.
    """

    def __init__(self, message: str, *, messages: list[str] | None = None, backtracks: int = 0) -> None:
        self.messages = list(messages or [message])
        self.backtracks = backtracks
        detail = f" (after {backtracks} re-run(s) with feedback: {'; '.join(self.messages[:-1])})" if backtracks else ""
        super().__init__(
            f"dspex.Assert failed: {message}{detail}. Give the predictor clearer instructions or "
            "examples, allow more re-runs (module.activate_assertions(max_backtracks=N) or "
            "dspex.configure(max_backtracks=N)), or use dspex.Suggest to log and go on"
        )
        self.msg = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_assertion_failed, (self.msg, self.messages, self.backtracks))


def _rebuild_assertion_failed(message: str, messages: list[str], backtracks: int) -> AssertionFailedError:
    return AssertionFailedError(message, messages=messages, backtracks=backtracks)


class CodeRepairError(DspexError, RuntimeError):
    """`ProgramOfThought` wrote code that still failed after ``max_iters`` attempts
    (DSPy raises a RuntimeError here). ``attempts`` is how many ran; ``last_error``
    what the last one's error said."""

    def __init__(self, message: str, *, attempts: int = 0, last_error: str = "") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_code_repair_error, (str(self), self.attempts, self.last_error))


def _rebuild_code_repair_error(message: str, attempts: int, last_error: str) -> CodeRepairError:
    return CodeRepairError(message, attempts=attempts, last_error=last_error)


class ToolError(DspexError):
    """A `dspex.Tool` could not be called: its arguments, its name or its function failed.

    An agent (`dspex.ReAct`) turns these into the observation the LM sees next, so
    the LM can correct itself; called directly, they reach the caller.
    """


class ToolArgumentError(ToolError, ValueError):
    """Arguments given to a tool do not match its signature (an unknown or missing
    argument, or a value of the wrong type). Carries the tool's name and the problems."""

    def __init__(self, message: str, *, tool: str = "", problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tool = tool
        self.problems = list(problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_tool_argument_error, (str(self), self.tool, self.problems))


def _rebuild_tool_argument_error(message: str, tool: str, problems: list[str]) -> ToolArgumentError:
    return ToolArgumentError(message, tool=tool, problems=problems)


class ToolNotFoundError(ToolError, ValueError):
    """A tool call names a tool that is not among the tools given."""


class ToolExecutionError(ToolError, RuntimeError):
    """A tool's own function raised while running a `ToolCalls.ToolCall` (the original
    exception is the ``__cause__``)."""


# --- the Python sandbox (dspex.sandbox) -------------------------------------------------


class CodeInterpreterError(DspexError, RuntimeError):
    """The Python sandbox could not run the code it was given. Raised as is for a
    failure of the sandbox itself (a broken process protocol); the subclasses say
    which failure it was. (DSPy's name; also a RuntimeError, as there.)"""


class CodeExecutionError(CodeInterpreterError):
    """The sandboxed code raised. ``error_type`` is the Python exception's class name,
    ``message`` its text and ``traceback_text`` the traceback over the code's own lines
    (what an LM needs to repair the code). The sandbox itself is fine: the next
    execution runs in the same interpreter, with its globals."""

    def __init__(self, error_type: str, message: str, traceback_text: str = "") -> None:
        super().__init__(error_type, message, traceback_text)
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return self.traceback_text.rstrip() or f"{self.error_type}: {self.message}"


class CodeSyntaxError(CodeExecutionError, SyntaxError):
    """The sandboxed code is not valid Python (also a SyntaxError, what DSPy raises);
    nothing of it ran. ``lineno`` is the line in the code, counted from 1."""

    def __init__(
        self, error_type: str, message: str, traceback_text: str = "", lineno: int | None = None
    ) -> None:
        super().__init__(error_type, message, traceback_text)
        self.msg = message
        self.lineno = lineno

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error_type, self.message, self.traceback_text, self.lineno))

    def __str__(self) -> str:
        return f"Invalid Python syntax: {CodeExecutionError.__str__(self)}"


class InterpreterTimeoutError(CodeInterpreterError, TimeoutError):
    """The code ran longer than the interpreter's ``timeout``. Its process was killed
    and is replaced; whatever the code's earlier executions left in globals is gone."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"the code did not finish within {self.timeout:g}s and was stopped (its sandbox "
            "process was killed and replaced, so earlier globals are gone); make it faster, "
            "or pass a larger timeout= to PythonInterpreter"
        )


class InterpreterCrashedError(CodeInterpreterError):
    """The sandbox process died while running the code (killed, out of memory in its
    JavaScript heap, a Deno failure). It is replaced for the next execution; earlier
    globals are gone. ``detail`` is its exit code and the end of its stderr."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"the sandbox process died while running the code: {self.detail}"


class InterpreterUnavailableError(CodeInterpreterError):
    """The sandbox processes kept dying: more restarts within the window than the
    interpreter's ``max_restarts`` allows, or the interpreter was shut down. Make a new
    `PythonInterpreter` (after fixing what the last failure says)."""


class SandboxInstallError(CodeInterpreterError, ConfigurationError):
    """Deno or Pyodide is missing and could not be installed (no network, no `deno`
    package). Run ``dspex sandbox install`` where the npm registry can be reached, or
    point ``DSPEX_SANDBOX_DIR`` at a directory where it was run."""


# --- optimizers ---------------------------------------------------------------


class OptimizationError(DspexError):
    """An optimizer could not produce a program."""


class BootstrapError(OptimizationError):
    """More teacher runs failed than ``max_errors`` allows."""

    def __init__(self, message: str, *, failures: Sequence[tuple[int, str]] = ()) -> None:
        # failures has a default so that unpickling, which calls cls(message) and then
        # restores the attributes, works.
        super().__init__(message)
        #: (example index, error text) of each failed teacher run
        self.failures = list(failures)


class SearchError(OptimizationError):
    """A search scored no candidate: every candidate failed (random search), or no
    candidate could be scored on the full valset (MIPROv2). The first failure, when
    there is one, is the ``__cause__``."""


#: MIPROv2's name for `SearchError`; one class, so either name catches both searches.
SearchFailedError = SearchError


class TrialFailedError(OptimizationError):
    """A candidate's evaluation failed; ``error_type`` names the original exception."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # args holds the formatted message, not the constructor's two arguments.
        return (type(self), (self.error_type, self.message), self.__dict__)


class RunCancelledError(OptimizationError):
    """The run's coordinator was cancelled; ``compile(..., run_id=...)`` resumes it."""


# --- the user's program, raising in another process ---------------------------------


class RemoteProgramError(DspexError):
    """The program raised in another process (a served replica, an evaluation worker)
    an exception that is passed back as text: its type, message and traceback."""

    def __init__(self, error_type: str, message: str, remote_traceback: str) -> None:
        super().__init__(error_type, message, remote_traceback)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


class RemoteExampleError(RemoteProgramError):
    """An example's program or metric raised on an evaluation worker."""


# --- the actor runtime ----------------------------------------------------------------


class DspexRuntimeError(DspexError):
    """The actor runtime failed while running: an actor died, did not start, or did
    not answer. (Not Python's RuntimeError: catch this one for dspex's runtime.)"""


class SupervisorError(DspexRuntimeError):
    """Base class of the supervision tree's errors."""


class InvalidChildSpecError(SupervisorError, ConfigurationError, ValueError):
    """A child spec or supervisor setting is invalid."""


class ChildStartError(SupervisorError):
    """A child failed to start (OTP's ``failed_to_start_child``).

    ``child`` names the child, ``reason`` says why (the exception raised by its
    ``__init__``, a start timeout, a name already taken, ...).
    """

    def __init__(self, child: str, reason: str) -> None:
        super().__init__(child, reason)
        self.child = child
        self.reason = reason

    def __str__(self) -> str:
        return f"failed to start child {self.child!r}: {self.reason}"


class ChildNotFoundError(SupervisorError):
    """No child of that name is known to the supervisor."""

    def __init__(self, child: str) -> None:
        super().__init__(child)
        self.child = child

    def __str__(self) -> str:
        return f"no child named {self.child!r}; see which_children() for the names"


class ChildAlreadyExistsError(SupervisorError):
    """A child of that name is already in the supervisor's child list."""

    def __init__(self, child: str, running: bool) -> None:
        super().__init__(child, running)
        self.child = child
        self.running = running

    def __str__(self) -> str:
        state = "already started" if self.running else "already present (terminated)"
        return f"child {self.child!r} is {state}; delete_child() it first or pick another name"


class ChildRunningError(SupervisorError):
    """The operation needs a terminated child but this one is running or restarting."""

    def __init__(self, child: str, state: str) -> None:
        super().__init__(child, state)
        self.child = child
        self.state = state

    def __str__(self) -> str:
        return f"child {self.child!r} is {self.state}; terminate_child() it first"


class SupervisorStoppedError(SupervisorError):
    """The supervisor has shut down and accepts no more requests."""

    def __init__(self, supervisor: str, reason: str) -> None:
        super().__init__(supervisor, reason)
        self.supervisor = supervisor
        self.reason = reason

    def __str__(self) -> str:
        return f"supervisor {self.supervisor!r} has stopped ({self.reason})"


class ServiceRestartedError(SupervisorError):
    """A non-idempotent call reached a service whose actor died.

    The call may or may not have run before the actor died (Ray cannot tell),
    so it is not retried. The next call resolves the restarted actor.
    """

    def __init__(self, name: str, method: str, cause: str) -> None:
        super().__init__(name, method, cause)
        self.name = name
        self.method = method
        self.cause = cause

    def __str__(self) -> str:
        return (
            f"service {self.name!r} died during {self.method}() ({self.cause}); the call "
            "may or may not have run. Retry it if that is safe, or mark it idempotent"
        )


class ReplicaDiedError(ServiceRestartedError):
    """Every replica a request was sent to died while answering it.

    The request may or may not have run. It was recorded in the dead letters;
    the supervisor restarts the replicas.
    """

    def __init__(
        self, service: str, replica: str, attempts: int, cause: str, dead_letter_id: str | None = None
    ) -> None:
        super().__init__(service, "acall", cause)
        # so it pickles with this signature
        self.args = (service, replica, attempts, cause, dead_letter_id)
        self.service = service
        self.replica = replica
        self.attempts = attempts
        self.dead_letter_id = dead_letter_id  # the entry's ``id`` in dspex.dead_letters()

    def __str__(self) -> str:
        letter = f" (id {self.dead_letter_id})" if self.dead_letter_id else ""
        return (
            f"service {self.service!r}: replica {self.replica} died while answering a request "
            f"({self.cause}); {self.attempts} attempt(s) on different replicas all died. The input "
            f"is in dspex.dead_letters(){letter}; if it crashes the program, fix or filter it"
        )


class ReplicaDrainingError(SupervisorError):
    """A served replica is stopping (an update or ``stop()``) and takes no new request.

    The handle sends such a request to another replica without counting an attempt:
    it never started, so it ran on no version.
    """

    def __init__(self, replica: str) -> None:
        super().__init__(replica)
        self.replica = replica

    def __str__(self) -> str:
        return f"replica {self.replica} is draining (being updated or stopped); send the request elsewhere"


class ServiceUpdateError(SupervisorError):
    """A served program could not be updated or rolled back (see the message for why)."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(service, detail)
        self.service = service
        self.detail = detail

    def __str__(self) -> str:
        return f"service {self.service!r}: {self.detail}"


class ServiceUnavailableError(SupervisorError):
    """No live actor answered to the service's name within the timeout."""

    def __init__(self, name: str, namespace: str, waited: float) -> None:
        super().__init__(name, namespace, waited)
        self.name = name
        self.namespace = namespace
        self.waited = waited

    def __str__(self) -> str:
        return (
            f"no live actor named {self.name!r} in namespace {self.namespace!r} after "
            f"{self.waited:.1f}s; is its supervisor running?"
        )


class WorkerLostError(DspexRuntimeError):
    """An example's evaluation worker died every time it was tried."""


class CoordinatorUnavailableError(DspexRuntimeError):
    """A run's coordinator did not come back in time."""


# --- tools around the library ------------------------------------------------------------


class SimLMRequestError(DspexError, ValueError):
    """The simulated LM server got a request body it cannot serve; the server answers
    it with HTTP 400 and this message, so an LM client sees an `LMBadRequestError`."""


class CliError(DspexError):
    """A ``dspex`` command failed in a way it reports to the user; ``code`` is the
    process exit code (a ``dspex.cli.common.ExitCode``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
