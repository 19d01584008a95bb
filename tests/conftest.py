"""Shared test fixtures.

``ray_cluster``: one local Ray cluster per test session, started only when a
test asks for it. The test process is connected to it (namespace
``dspex-test``); tests may ``add_node``/``remove_node`` on the yielded
``ray.cluster_utils.Cluster``. Node health checks are shortened so a removed
node is declared dead within about 1.5 s instead of about 14 s.

Everything stays on this machine:

- ``RAY_USAGE_STATS_ENABLED=0``: no usage report leaves the machine.
- Ray turns "127.0.0.1" in an address into the IP it finds by a UDP connect to
  a public address. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it keep the
  loopback address (it has no other effect on Linux); every node is started on
  127.0.0.1 explicitly too.
- ``RAY_TMPDIR`` points at a fresh directory for the session, so this cluster's
  files and its ``ray_current_cluster`` address file never meet another Ray
  instance on the machine (a bare ``ray.init()`` elsewhere won't attach to it).

Classes defined in test modules are sent to Ray workers by value (workers
cannot import test modules), so a test can turn any class in its own module
into an actor.
"""

from __future__ import annotations

import importlib
import os
import tempfile

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Every process of the session (Ray workers included, which inherit this environment)
# finds the sandbox's Pyodide in the one test cache, fetched once (tests/_sandbox.py).
os.environ.setdefault("DSPEX_SANDBOX_DIR", os.path.join(tempfile.gettempdir(), "dspex-test-sandbox"))

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
HEAD_CPUS = 2
# A node missing 3 health checks 500 ms apart is dead: ~1.5 s instead of ~14 s.
HEALTH_CHECK_CONFIG = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="dspex-ray-")
    previous_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    _send_test_modules_by_value()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": HEAD_CPUS,
            "node_ip_address": LOOPBACK,
            "include_dashboard": False,
            "_system_config": HEALTH_CHECK_CONFIG,
        },
    )
    try:
        ray.init(address=cluster.address, namespace="dspex-test", _node_ip_address=LOOPBACK)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous_tmpdir
        shutil.rmtree(temp_dir, ignore_errors=True)


def _send_test_modules_by_value() -> None:
    # pytest imports test modules under bare names ("test_x", "helpers") that
    # Ray workers cannot import; pickling them by value ships the code instead.
    from ray import cloudpickle

    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(TESTS_DIR):
            cloudpickle.register_pickle_by_value(module)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh LM cache (memory and disk) in this test's folder, as the process default."""
    from dspex.clients import cache as cache_module

    cache = cache_module.LMCache(disk_dir=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "_default", cache)
    yield cache
    cache.close()


_settings_module = importlib.import_module("dspex.primitives.settings")
_history_module = importlib.import_module("dspex.clients.history")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the process-wide settings as they were before it (a test
    that calls dspex.configure(lm=...) does not leak it), with a fresh trace list and no
    thread or task owning configure(), and an empty global LM history (tests read it by
    position, which a history grown to its size limit would shift)."""
    _history_module.GLOBAL_HISTORY.clear()
    fresh = dict(_settings_module._defaults)
    if isinstance(fresh.get("trace"), list):
        fresh["trace"] = []
    monkeypatch.setattr(_settings_module, "_defaults", MappingProxyType(fresh))
    monkeypatch.setattr(_settings_module, "_owner_thread", None)
    monkeypatch.setattr(_settings_module, "_owner_task", None)
