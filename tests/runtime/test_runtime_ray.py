"""The application tree on real Ray: init attaches to the session's Ray, a
second driver finds the same tree, provider pools start under
``dspex.providers``, ``status()`` and ``dspex status`` read it, and
``shutdown()`` stops it in reverse order without stopping the session's Ray.

Uses the session's ``ray_cluster`` (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import typer
from typer.testing import CliRunner

from dspex import runtime
from dspex.cli.status import status as status_command
from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache
from dspex.clients.lm import LM
from dspex.evaluate.runners import default_runner
from dspex.optimizers.backends import compile_backend
from dspex.runtime.names import NAMESPACE
from dspex.runtime.pools import pool_client
from dspex.runtime.pools.lease_client import flush_leases
from dspex.runtime.pools.pool_client import pool_name, stop_pool
from dspex.runtime.runs import compile_remote
from dspex.runtime.supervision.application import (
    CHILDREN,
    DEAD_LETTERS,
    PROVIDERS,
    find_root,
    named_actor,
    start_root,
)
from dspex.runtime.supervision.events import EVENT_LOG_NAME
from dspex.simlm import start_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SUBPROCESS_TIMEOUT = 120


@pytest.fixture(scope="module")
def session(ray_cluster: Any) -> Iterator[Any]:
    assert runtime.current() is None, "another test left the runtime up"
    try:
        yield ray_cluster
    finally:
        runtime.shutdown(stop_tree=True)


@pytest.fixture
def rt(session: Any) -> runtime.Runtime:
    return runtime.init()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children_of(name: str) -> list[Any]:
    return ray.get(ray.get_actor(name, namespace=NAMESPACE).which_children.remote(), timeout=30)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(status_command)
    return app


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


# --- init ---------------------------------------------------------------------------------


def test_init_attaches_to_the_running_ray_and_is_idempotent(rt: runtime.Runtime) -> None:
    assert not rt.started_ray, "init started a Ray of its own next to the session's"
    assert runtime.init() is rt and runtime.active()
    assert start_root()._actor_id == rt.root._actor_id  # a second start finds the same root
    children = children_of("dspex.root")
    assert [c.name for c in children] == list(CHILDREN)
    assert all(c.state == "running" for c in children)
    assert [c.is_supervisor for c in children] == [False, True, True, True]
    assert pool_client.pool_routing_enabled()
    # The runtime filled the core's seams: evaluations and compiles go to actors.
    assert default_runner().name == "ray" and default_runner().remote
    assert compile_backend(None) is compile_remote


SECOND_DRIVER = """
import json, os, sys
import ray
from dspex import runtime
rt = runtime.init(address=sys.argv[1])
root = ray.get_actor("dspex.root", namespace="dspex")
children = [c.name for c in ray.get(root.which_children.remote())]
print(json.dumps({
    "root": rt.root._actor_id.hex(),
    "owns_root": rt.owns_root,
    "started_ray": rt.started_ray,
    "children": children,
    "auth_mode": os.environ.get("RAY_AUTH_MODE"),
}))
runtime.shutdown()  # attached, not created: the tree stays up
"""


def test_a_second_driver_finds_the_same_tree_and_leaves_it_up(
    rt: runtime.Runtime, session: Any, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(uuid.uuid4().hex)  # a cluster without auth ignores the token it is sent
    result = run_python(SECOND_DRIVER, session.address, env=clean_env(RAY_AUTH_TOKEN_PATH=str(token)))
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["root"] == rt.root._actor_id.hex()
    assert seen["children"] == list(CHILDREN)
    assert (seen["owns_root"], seen["started_ray"]) == (False, False)
    # A token lies there, but this cluster runs without auth: token mode would make the
    # driver reject the cluster's own calls (and lose the actors it starts).
    assert seen["auth_mode"] is None
    assert ray.get(rt.root.ready.remote(), timeout=30)  # its shutdown left the tree running


LOCAL_DRIVER = """
import json, os, time
import ray
from dspex import runtime
from dspex.runtime.serve import serve
from dspex.primitives.module import Module


class Up(Module):
    async def aforward(self, text):
        return text.upper()


started = time.monotonic()
rt = runtime.init(num_cpus=1)
ready = time.monotonic()
answer = serve(Up(), name="up", replicas=1)(text="local")
served = time.monotonic()
def routes_through_pools():
    from dspex.runtime.pools.pool_client import pool_routing_enabled
    return pool_routing_enabled()

worker_env = ray.get(ray.remote(routes_through_pools).options(num_cpus=0).remote())
runtime.shutdown()
print(json.dumps({
    "started_ray": rt.started_ray,
    "owns_root": rt.owns_root,
    "answer": answer,
    "worker_env": worker_env,
    "ray_after": ray.is_initialized(),
    "init_s": ready - started,
    "serve_s": served - ready,
}))
"""


def test_without_an_address_init_starts_and_shutdown_stops_a_local_ray(session: Any) -> None:
    # Its own temp dir: the local Ray must not meet the session's cluster files.
    temp_dir = tempfile.mkdtemp(prefix="dspex-rt-")
    try:
        result = run_python(LOCAL_DRIVER, env=clean_env(RAY_TMPDIR=temp_dir))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["started_ray"], seen["owns_root"], seen["ray_after"]) == (True, True, False)
    assert seen["answer"] == "LOCAL"
    assert seen["worker_env"] is True  # the setup hook made a plain task route through the pools
    print(f"local init {seen['init_s']:.1f}s, serve 1 replica {seen['serve_s']:.1f}s")


def test_a_connected_process_never_turns_token_mode_on(
    session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray read its auth mode at import; set now, it would only leak into processes this
    # one starts (a node added to this cluster would come up in token mode, unusable).
    token = tmp_path / "token"
    token.write_text(uuid.uuid4().hex)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    monkeypatch.delenv("RAY_AUTH_MODE")
    runtime._use_token_if_required("auto")
    assert "RAY_AUTH_MODE" not in os.environ


def test_the_cluster_is_asked_whether_it_wants_a_token(session: Any) -> None:
    host, port = session.address.rsplit(":", 1)
    assert runtime._probe_gcs((host, int(port)), None) == "ok"  # no auth here
    assert runtime._probe_gcs(("127.0.0.1", closed_port()), None) == "unreachable"


# --- provider pools --------------------------------------------------------------------------


@pytest.fixture
def memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_default", LMCache(enable_disk=False))


async def test_a_pool_starts_under_providers_on_first_use(
    rt: runtime.Runtime, memory_cache: None
) -> None:
    with start_sim_lm(seed=3) as server:
        lm = LM("openai/sim", api_base=server.url, temperature=0.0)
        name = pool_name(lm.provider, lm.model_name, lm._api_base())
        try:
            response = await lm.acomplete([{"role": "user", "content": f"hi {uuid.uuid4()}"}])
            assert response.outputs
            child = next(c for c in children_of(PROVIDERS) if c.name == name)
            assert (child.state, child.restart) == ("running", "permanent")
            await flush_leases()  # lease mode: this process's calls reach the pool's stats
            pools = {row["name"]: row for row in runtime.status()["pools"]}
            assert pools[name]["calls"] >= 1 and pools[name]["breaker"] == "closed"

            # A crashed pool is restarted by its supervisor and found again by name.
            ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            again = await lm.acomplete([{"role": "user", "content": f"again {uuid.uuid4()}"}])
            assert again.outputs
            wait_for(
                lambda: any(
                    c.name == name and c.restarts == 1 and c.state == "running"
                    for c in children_of(PROVIDERS)
                ),
                30,
                "the pool's restart",
            )
        finally:
            stop_pool(lm)
        # Stopped through its supervisor: removed, not restarted.
        assert name not in [c.name for c in children_of(PROVIDERS)]
        wait_for(lambda: named_actor(name) is None, 10, "the pool's name to be released")


# --- status --------------------------------------------------------------------------------


def test_status_reports_the_tree_pools_and_dead_letters(rt: runtime.Runtime) -> None:
    report = runtime.status()
    tree = report["tree"]
    assert (tree["name"], tree["kind"], tree["strategy"], tree["status"]) == (
        "dspex.root",
        "supervisor",
        "one_for_one",
        "running",
    )
    assert [child["name"] for child in tree["children"]] == list(CHILDREN)
    assert all(child["restarts"] == 0 for child in tree["children"])
    lines = report["tree_text"].splitlines()
    assert lines[0] == "dspex.root [supervisor one_for_one] running"
    assert "└── dspex.optimizers [supervisor one_for_one] running" in lines
    assert isinstance(report["pools"], list)
    assert isinstance(report["dead_letters"]["count"], int)
    assert report["address"]


def test_status_command_prints_json_and_text(rt: runtime.Runtime) -> None:
    runner = CliRunner()
    as_json = runner.invoke(cli(), ["--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert [child["name"] for child in report["tree"]["children"]] == list(CHILDREN)
    as_text = runner.invoke(cli(), [])
    assert as_text.exit_code == 0, as_text.output
    assert "supervision tree" in as_text.stdout and "dspex.services" in as_text.stdout
    assert "provider pools" in as_text.stdout and "dead letters:" in as_text.stdout


STATUS_CLI = "import typer; from dspex.cli.status import status; typer.run(status)"


def test_status_command_exits_4_when_no_cluster_answers() -> None:
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = run_python(STATUS_CLI, "--address", address, env=clean_env())
    assert result.returncode == 4, result.stderr[-2000:]
    assert f"no Ray cluster answered at '{address}'" in result.stderr
    assert time.monotonic() - started < 60  # Ray alone retries for minutes


# --- shutdown ---------------------------------------------------------------------------------


def test_shutdown_stops_the_tree_in_reverse_order_and_leaves_ray_up(rt: runtime.Runtime) -> None:
    assert rt.owns_root, "the tree was left over from elsewhere, so shutdown() would keep it"
    event_log = ray.get_actor(EVENT_LOG_NAME, namespace=NAMESPACE)
    cursor = ray.get(event_log.head.remote(), timeout=30)

    runtime.shutdown()

    assert not runtime.active()
    assert ray.is_initialized(), "shutdown() stopped a Ray it did not start"
    assert find_root() is None
    assert all(named_actor(name) is None for name in CHILDREN)
    events, _ = ray.get(event_log.since.remote(cursor, 10_000), timeout=30)
    stopped = [
        e.data["child"]
        for e in events
        if e.kind == "child.exited" and e.source == "dspex.root" and e.data["reason"] == "shutdown"
    ]
    assert stopped == list(reversed(CHILDREN))
    assert not pool_client.pool_routing_enabled()
    # ...and shutdown put the in-process defaults back.
    assert default_runner().name == "local" and compile_backend(None) is None

    result = CliRunner().invoke(cli(), [])
    assert result.exit_code == 4
    assert "no dspex runtime" in result.output
    with pytest.raises(runtime.RuntimeNotRunningError):
        from dspex.runtime.supervision.application import dead_letters

        dead_letters()
    assert named_actor(DEAD_LETTERS) is None
