"""ChildSpec validation, defaults and pickling; exit reasons; error pickling."""

from __future__ import annotations

import pickle

import pytest

from dspex.errors import DspexError
from dspex.runtime.supervision import (
    ChildSpec,
    ChildStartError,
    ExitReason,
    InvalidChildSpecError,
    ServiceRestartedError,
    ServiceUnavailableError,
    SupervisorStoppedError,
)
from dspex.runtime.supervision.errors import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
)
from dspex.runtime.supervision.reasons import describe_error, reason_from_actor_error


class Worker:
    def __init__(self, n: int = 0) -> None:
        self.n = n


def test_defaults_follow_otp() -> None:
    spec = ChildSpec("w", Worker)
    assert (spec.restart, spec.shutdown, spec.significant) == ("permanent", 5.0, False)
    assert spec.args == () and dict(spec.kwargs) == {} and dict(spec.actor_options) == {}


def test_spec_is_frozen_and_its_mappings_are_read_only() -> None:
    kwargs = {"n": 1}
    spec = ChildSpec("w", Worker, kwargs=kwargs)
    kwargs["n"] = 2  # the caller's dict is copied
    assert spec.kwargs["n"] == 1
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.kwargs["n"] = 3  # type: ignore[index]


def test_spec_pickles_round_trip() -> None:
    spec = ChildSpec("w", Worker, args=[1], restart="transient", actor_options={"num_cpus": 0})
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and copy.args == (1,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": 3},
        {"cls": Worker()},
        {"restart": "sometimes"},
        {"actor_options": {"name": "other"}},
        {"actor_options": {"max_restarts": -1}},
        {"start_timeout": 0},
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"name": "w", "cls": Worker, **kwargs}
    with pytest.raises(InvalidChildSpecError):
        ChildSpec(**fields)  # type: ignore[arg-type]


def test_invalid_spec_error_is_a_value_error_and_a_dspex_error() -> None:
    assert issubclass(InvalidChildSpecError, ValueError)
    assert issubclass(InvalidChildSpecError, DspexError)


@pytest.mark.parametrize(
    ("given", "kind", "clean"),
    [
        ("normal", "normal", True),
        ("shutdown", "shutdown", True),
        ("shutdown: draining", "shutdown", True),
        ("out of memory", "error", False),
    ],
)
def test_exit_reasons_parse(given: str, kind: str, clean: bool) -> None:
    reason = ExitReason.parse(given)
    assert (reason.kind, reason.clean) == (kind, clean)


def test_exit_reason_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        ExitReason.parse(3)  # type: ignore[arg-type]


class FakeDiedError(Exception):
    actor_init_failed = False


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("The actor died...\nThe actor is dead because it was killed by `ray.kill`.", "killed"),
        ("The actor died...\nThe actor died because its node has died. Node Id: x", "node_lost"),
        ("The actor died...\nThe actor is dead because its worker process has died.", "crashed"),
    ],
)
def test_actor_errors_are_classified(message: str, kind: str) -> None:
    assert reason_from_actor_error(FakeDiedError(message)).kind == kind


def test_init_failure_is_summarised_by_its_exception_line() -> None:
    error = FakeDiedError("creation task failed\n  File x\n    raise RuntimeError\nRuntimeError: boom")
    error.actor_init_failed = True
    assert describe_error(error) == "__init__ raised RuntimeError: boom"


@pytest.mark.parametrize(
    "error",
    [
        ChildStartError("db", "RuntimeError: boom"),
        ChildNotFoundError("db"),
        ChildAlreadyExistsError("db", True),
        ChildRunningError("db", "running"),
        SupervisorStoppedError("root", "shutdown"),
        ServiceRestartedError("db", "put", "actor died"),
        ServiceUnavailableError("db", "dspex", 2.0),
    ],
)
def test_errors_pickle_with_their_fields_and_message(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and vars(copy) == vars(error)
    assert "db" in str(error) or "root" in str(error)
