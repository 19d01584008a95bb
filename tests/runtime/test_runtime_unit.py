"""The runtime's pure parts, without a Ray cluster: address handling, token
detection, runtime_env merging, the replica class run in-process, the handle's
replica choice and the errors' pickling."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import socket
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle

from dspex import runtime
from dspex.errors import ConfigurationError
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.workload import batch_work, current_workload
from dspex.runtime import worker_setup
from dspex.runtime.serve import (
    ModuleActor,
    RemoteProgramError,
    ReplicaDiedError,
    ServiceHandle,
    _portable,
)
from dspex.runtime.supervision.application import (
    BRANCH_INTENSITY,
    CHILDREN,
    HEAD_NODE,
    root_children,
)
from dspex.runtime.supervision.errors import ServiceRestartedError


class Shout(Module):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.wait = False

    async def aforward(self, text: str) -> Prediction:
        if self.wait:
            await self.release.wait()
        if text == "bad":
            raise ValueError("bad input")
        return Prediction(answer=text.upper())


class KeywordOnlyError(Exception):
    """Rebuilt by pickle as cls(*args): a keyword-only constructor makes that fail."""

    def __init__(self, *, detail: str) -> None:
        super().__init__(f"failed: {detail}")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- addresses, tokens, runtime_env ------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6380", ("127.0.0.1", 6380)),
        ("ray://head:10001", ("head", 10001)),
        ("[::1]:7000", ("::1", 7000)),
        ("head", ("head", 6379)),
        ("auto", None),
        ("local", None),
        ("head:notaport", None),
    ],
)
def test_host_port(address: str, expected: tuple[str, int] | None) -> None:
    assert runtime._host_port(address) == expected


def test_unreachable_address_fails_fast_with_a_hint() -> None:
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(runtime.ClusterUnreachableError) as info:
        runtime._check_reachable(address)
    assert isinstance(info.value, ConfigurationError)
    assert address in str(info.value) and "dspex cluster start" in str(info.value)


def test_num_cpus_with_an_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="num_cpus applies only"):
        runtime._start_ray("127.0.0.1:6379", 2, {})


def test_user_runtime_env_is_merged_and_wins() -> None:
    merged = runtime._merged_runtime_env(
        {"pip": ["x"], "env_vars": {"DSPEX_POOLS": "0", "MINE": "1"}}
    )
    assert merged == {
        "pip": ["x"],
        "env_vars": {"DSPEX_POOLS": "0", "MINE": "1", "RAY_USAGE_STATS_ENABLED": "0"},
        "worker_process_setup_hook": "dspex.runtime.worker_setup.setup_worker",
    }
    assert runtime._merged_runtime_env(None)["env_vars"] == runtime.WORKER_ENV


def test_a_users_setup_hook_runs_before_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    by_path = runtime._merged_runtime_env({"worker_process_setup_hook": "mypkg.setup"})
    assert by_path["worker_process_setup_hook"] == worker_setup.HOOK_PATH
    assert by_path["env_vars"][worker_setup.USER_HOOK_ENV] == "mypkg.setup"
    calls: list[str] = []
    monkeypatch.setattr(worker_setup, "install_pool_routing", lambda: calls.append("dspex"))
    by_callable = runtime._merged_runtime_env({"worker_process_setup_hook": lambda: calls.append("user")})
    by_callable["worker_process_setup_hook"]()
    assert calls == ["user", "dspex"]


def test_dspex_pools_0_keeps_a_workers_requests_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.clients.dispatch import current_dispatcher

    monkeypatch.setenv(worker_setup.POOLS_ENV, "0")
    monkeypatch.delenv(worker_setup.USER_HOOK_ENV, raising=False)
    worker_setup.setup_worker()
    assert current_dispatcher() is None


def test_in_a_submitted_job_the_jobs_variables_are_not_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ray refuses to merge a job's runtime_env with a driver's that sets the same variable.
    job = {"runtime_env": {"working_dir": "/x", "env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}}
    monkeypatch.setenv(runtime.JOB_CONFIG_ENV, json.dumps(job))
    assert runtime._merged_runtime_env(None) == {
        "env_vars": {},
        "worker_process_setup_hook": worker_setup.HOOK_PATH,
    }


def test_a_jobs_own_setup_hook_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray allows one hook per job: dspex's actors then enable pools themselves.
    job = {"runtime_env": {"worker_process_setup_hook": "theirs.setup"}}
    monkeypatch.setenv(runtime.JOB_CONFIG_ENV, json.dumps(job))
    assert "worker_process_setup_hook" not in runtime._merged_runtime_env(None)


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        # setenv first: delenv of an unset variable records nothing to undo, and
        # the code under test sets RAY_AUTH_MODE, which must not outlive the test
        # (a node added later in the session would start with token auth).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    # As in a fresh driver: this test process may already hold the session's Ray.
    monkeypatch.setattr(runtime, "_connected_to_ray", lambda: False)
    return tmp_path


def test_no_token_leaves_auth_mode_alone(token_env: Path) -> None:
    runtime._use_token_if_required("auto")
    assert "RAY_AUTH_MODE" not in os.environ


@pytest.mark.parametrize("source", ["env", "path", "home"])
def test_a_token_turns_token_mode_on(
    token_env: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    import os

    if source == "env":
        monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken")
    elif source == "path":
        (token_env / "tok").write_text("t0ken")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_env / "tok"))
    else:
        (token_env / ".ray").mkdir()
        (token_env / ".ray" / "auth_token").write_text("t0ken")
    runtime._use_token_if_required("auto")
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_an_explicit_auth_mode_is_respected(token_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    runtime._use_token_if_required("auto")
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


# --- the tree's shape ----------------------------------------------------------------------


def test_root_children_in_start_order_on_the_head_node_without_cpus() -> None:
    specs = root_children()
    assert tuple(spec.name for spec in specs) == CHILDREN
    assert [spec.is_supervisor for spec in specs] == [False, True, True, True]
    for spec in specs:
        assert dict(spec.actor_options) == HEAD_NODE
        assert spec.restart == "permanent"
    for spec in specs[1:]:
        config = spec.args[1]  # supervisor_spec: (children, SupervisorConfig)
        assert config.strategy == "one_for_one"
        assert config.max_restarts == BRANCH_INTENSITY[spec.name]["max_restarts"]


# --- the replica, in-process ----------------------------------------------------------------


def replica(program: Any, max_concurrency: int = 4) -> ModuleActor:
    payload = cloudpickle.dumps((program, {}))
    return ModuleActor(payload, service="t", max_concurrency=max_concurrency, use_pools=False)


async def test_replica_answers_and_counts() -> None:
    actor = replica(Shout())
    assert (await actor.acall(text="hi")).answer == "HI"
    with pytest.raises(ValueError, match="bad input"):
        await actor.acall(text="bad")
    stats = await actor.stats()
    assert (stats["served"], stats["errors"], stats["in_flight"]) == (1, 1, 0)


async def test_terminate_waits_for_requests_in_flight() -> None:
    program = Shout()
    program.wait = True
    actor = replica(program)
    # The replica holds its own copy of the program: reach its event through it.
    held = actor._caller._program
    call = asyncio.ensure_future(actor.acall(text="slow"))
    await asyncio.sleep(0)  # let the call start
    stop = asyncio.ensure_future(actor.terminate("shutdown"))
    done, _ = await asyncio.wait({stop}, timeout=0.1)
    assert not done, "terminate returned with a request in flight"
    held.release.set()
    assert (await call).answer == "SLOW"
    await asyncio.wait_for(stop, 5)


class ReportsWorkload(Module):
    async def aforward(self, text: str) -> Prediction:
        return Prediction(answer=current_workload())


async def test_replica_serves_as_interactive_work_even_inside_batch_work() -> None:
    # A served request fails fast on an open circuit (a fallback beats a wait).
    actor = replica(ReportsWorkload())
    with batch_work():
        assert (await actor.acall(text="x")).answer == "interactive"


def test_unpicklable_program_errors_become_remote_program_errors() -> None:
    try:
        raise KeywordOnlyError(detail="x")
    except KeywordOnlyError as exc:
        portable = _portable(exc)
    assert isinstance(portable, RemoteProgramError)
    assert portable.error_type.endswith("KeywordOnlyError")
    assert "failed: x" in str(portable) and "KeywordOnlyError" in portable.remote_traceback
    assert pickle.loads(pickle.dumps(portable)).message == "failed: x"
    plain = ValueError("fine")
    assert _portable(plain) is plain


def test_replica_died_error_pickles_and_is_a_service_restarted_error() -> None:
    error = pickle.loads(pickle.dumps(ReplicaDiedError("qa", "dspex.serve.qa.1", 2, "killed")))
    assert isinstance(error, ServiceRestartedError)
    assert (error.service, error.replica, error.attempts) == ("qa", "dspex.serve.qa.1", 2)
    assert "2 attempt(s)" in str(error) and "dead_letters" in str(error)


# --- the handle's choice of replica -----------------------------------------------------------


def test_handle_prefers_untried_then_least_loaded_round_robin() -> None:
    handle = ServiceHandle("s", ["a", "b", "c"])
    firsts = [handle._order([])[0] for _ in range(3)]
    assert firsts == ["a", "b", "c"]  # equal load: round robin
    handle._count("a", +1)
    handle._count("b", +1)
    assert handle._order([])[0] == "c"  # least loaded wins whatever the turn
    assert handle._order(["c"])[-1] == "c"  # a replica that died under this request goes last


def test_handle_pickles_without_its_local_state() -> None:
    handle = ServiceHandle("s", ["a", "b"], retries=0)
    handle._count("a", +1)
    handle._dead.add("deadbeef")
    copy = pickle.loads(pickle.dumps(handle))
    assert (copy.name, copy.replicas, copy.retries) == ("s", ("a", "b"), 0)
    assert copy.in_flight() == {"a": 0, "b": 0} and not copy._dead
