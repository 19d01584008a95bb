"""Nested supervisors, escalation, start failures, the dynamic-children API
and shutdown handling, on real Ray actors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from supervision_helpers import (
    EventTail,
    Exiter,
    Graceful,
    Worker,
    actor,
    children,
    name_is_free,
    restarted,
    unique,
    wait_until,
)

from dspex.runtime.supervision import (
    ChildAlreadyExistsError,
    ChildNotFoundError,
    ChildRunningError,
    ChildSpec,
    ChildStartError,
    ExitReason,
    get_supervisor,
    start_supervisor,
    supervisor_spec,
)
from dspex.runtime.supervision.state import REACHED_MAX_RESTART_INTENSITY


def kill_and_wait(sup, name: str) -> None:
    """Kill a worker and wait until its supervisor runs a new one."""
    old = children(sup)[name].actor_id
    ray.kill(actor(name))
    wait_until(lambda: restarted(sup, name, old), what=f"restart of {name}")


def test_escalation_climbs_the_tree_up_to_the_root(roots) -> None:
    root = unique("esc")
    sub, w = f"{root}.sub", f"{root}.sub.w"
    trans_sub, tw = f"{root}.tsub", f"{root}.tsub.w"
    limits = {"max_restarts": 1, "max_seconds": 60.0}
    sup = roots.start(
        root,
        [
            supervisor_spec(sub, [ChildSpec(w, Worker)], **limits),
            supervisor_spec(trans_sub, [ChildSpec(tw, Worker)], restart="transient", **limits),
        ],
        exit_grace=0.5,
        **limits,
    )
    root_watch = sup.watch.remote()
    tail = EventTail()

    # A transient child supervisor that gives up exits `shutdown`: not restarted.
    old_tw = children(get_supervisor(trans_sub))[tw].actor_id
    ray.kill(actor(tw))
    wait_until(lambda: restarted(get_supervisor(trans_sub), tw, old_tw), what="tw restart")
    ray.kill(actor(tw))
    wait_until(lambda: children(sup)[trans_sub].state == "terminated", what="tsub down")
    assert wait_until(lambda: name_is_free(tw), what="tsub's child stopped")

    # A permanent one is restarted by the root, with fresh children.
    first_sub = children(sup)[sub].actor_id
    kill_and_wait(get_supervisor(sub), w)
    ray.kill(actor(w))
    wait_until(lambda: restarted(sup, sub, first_sub), what="sub restarted by root")
    escalated = tail.wait_for("supervisor.escalated")
    assert escalated.source in (sub, trans_sub)
    exit_event = tail.wait_for("child.exited", child=sub)
    assert exit_event.source == root
    assert (exit_event.data["reason"], exit_event.data["detail"]) == (
        "shutdown",
        REACHED_MAX_RESTART_INTENSITY,
    )
    wait_until(lambda: children(get_supervisor(sub)).get(w, None), what="new sub's worker")

    # The second escalation exceeds the root's own intensity: the root exits too.
    kill_and_wait(get_supervisor(sub), w)
    ray.kill(actor(w))
    reason = ray.get(root_watch, timeout=60)
    assert reason == ExitReason("shutdown", REACHED_MAX_RESTART_INTENSITY)
    assert wait_until(lambda: name_is_free(root) and name_is_free(sub) and name_is_free(w))
    assert tail.wait_for("supervisor.escalated", timeout=10).kind  # root's own, via the log
    assert any(e.source == root for e in tail.matching(["supervisor.escalated"]))


def test_failing_start_stops_the_started_children_in_reverse_order(ray_cluster) -> None:
    root = unique("badstart")
    a, b, bad, c = (f"{root}.{x}" for x in "ab!c")
    tail = EventTail()
    with pytest.raises(ChildStartError) as err:
        start_supervisor(
            root,
            [
                ChildSpec(a, Worker),
                ChildSpec(b, Worker),
                ChildSpec(bad, Worker, kwargs={"fail": True}),
                ChildSpec(c, Worker),
            ],
        )
    assert err.value.child == bad
    assert "RuntimeError: this worker refuses to start" in err.value.reason
    tail.wait_for("child.exited", child=a)
    seq = [(e.kind, e.data["child"]) for e in tail.matching() if e.source == root]
    assert seq == [
        ("child.started", a),
        ("child.started", b),
        ("child.start_failed", bad),
        ("child.exited", b),
        ("child.exited", a),
    ]
    assert all(name_is_free(n) for n in (root, a, b, bad, c))


def test_a_child_supervisor_failing_to_start_fails_its_parent(ray_cluster) -> None:
    root = unique("badnest")
    sub, bad = f"{root}.sub", f"{root}.sub.bad"
    with pytest.raises(ChildStartError) as err:
        start_supervisor(
            root, [supervisor_spec(sub, [ChildSpec(bad, Worker, kwargs={"fail": True})])]
        )
    assert err.value.child == sub
    assert bad in err.value.reason and "refuses to start" in err.value.reason
    assert wait_until(lambda: name_is_free(root) and name_is_free(sub))


def test_a_failed_restart_is_retried_and_counted_until_the_supervisor_gives_up(
    roots, tmp_path: Path
) -> None:
    root = unique("retry")
    name = f"{root}.w"
    broken = tmp_path / "broken"
    sup = roots.start(
        root,
        [ChildSpec(name, Worker, kwargs={"fail_if_exists": str(broken)})],
        max_restarts=3,
        max_seconds=60.0,
        exit_grace=0.5,
    )
    root_watch = sup.watch.remote()
    tail = EventTail()
    broken.touch()  # from now on every start of the worker fails
    ray.kill(actor(name))
    # The restart counts once, each failed retry once more: 3 allowed, the 4th exceeds.
    reason = ray.get(root_watch, timeout=60)
    assert reason == ExitReason("shutdown", REACHED_MAX_RESTART_INTENSITY)
    tail.wait_for("supervisor.escalated", timeout=10)
    failures = tail.matching(["child.start_failed"], child=name)
    assert len(failures) == 3
    assert all("refuses to start" in e.data["reason"] for e in failures)


def test_auto_shutdown_when_a_significant_child_ends(roots) -> None:
    root = unique("auto")
    done, other = f"{root}.done", f"{root}.other"
    sup = roots.start(
        root,
        [
            ChildSpec(other, Worker),
            ChildSpec(done, Exiter, restart="transient", significant=True),
        ],
        auto_shutdown="any_significant",
        exit_grace=0.5,
    )
    root_watch = sup.watch.remote()
    actor(done).finish.remote("normal")
    assert ray.get(root_watch, timeout=60) == ExitReason("shutdown", "auto_shutdown")
    assert wait_until(lambda: name_is_free(other) and name_is_free(root))


def test_dynamic_children(roots) -> None:
    root = unique("dyn")
    a, b = f"{root}.a", f"{root}.b"
    sup = roots.start(root)
    assert ray.get(sup.which_children.remote()) == []

    info = ray.get(sup.start_child.remote(ChildSpec(a, Worker)))
    assert (info.name, info.state, info.restarts) == (a, "running", 0)
    assert ray.get(actor(a).incr.remote()) == 1
    with pytest.raises(ChildAlreadyExistsError):
        ray.get(sup.start_child.remote(ChildSpec(a, Worker)))
    with pytest.raises(ChildStartError, match="refuses to start"):
        ray.get(sup.start_child.remote(ChildSpec(b, Worker, kwargs={"fail": True})))
    assert list(children(sup)) == [a]  # a failed start_child keeps no spec

    counts = ray.get(sup.count_children.remote())
    assert (counts.specs, counts.active, counts.workers, counts.supervisors) == (1, 1, 1, 0)
    with pytest.raises(ChildRunningError):
        ray.get(sup.delete_child.remote(a))
    with pytest.raises(ChildRunningError):
        ray.get(sup.restart_child.remote(a))

    ray.get(sup.terminate_child.remote(a))
    assert children(sup)[a].state == "terminated" and name_is_free(a)
    assert ray.get(sup.count_children.remote()).active == 0

    info = ray.get(sup.restart_child.remote(a))
    assert (info.state, info.restarts) == ("running", 1)
    assert ray.get(actor(a).get.remote()) == 0  # a new actor: state starts over

    ray.get(sup.terminate_child.remote(a))
    ray.get(sup.delete_child.remote(a))
    assert children(sup) == {}
    with pytest.raises(ChildNotFoundError):
        ray.get(sup.terminate_child.remote(a))


def test_shutdown_honours_each_childs_spec(roots, tmp_path: Path) -> None:
    root = unique("shut")
    polite, slow, brutal = (f"{root}.{x}" for x in ("polite", "slow", "brutal"))
    marker = {n: str(tmp_path / n.rsplit(".", 1)[1]) for n in (polite, slow, brutal)}
    sup = roots.start(
        root,
        [
            ChildSpec(polite, Graceful, args=(marker[polite],)),
            ChildSpec(slow, Graceful, args=(marker[slow], 60.0), shutdown=0.5),
            ChildSpec(brutal, Graceful, args=(marker[brutal],), shutdown="brutal_kill"),
        ],
    )
    tail = EventTail()
    ray.get(sup.terminate_child.remote(polite))
    assert Path(marker[polite]).read_text() == "shutdown"

    started = time.monotonic()
    ray.get(sup.terminate_child.remote(slow))
    took = time.monotonic() - started
    assert 0.5 <= took < 10, took  # waited for the timeout, then killed
    assert not Path(marker[slow]).exists()
    assert tail.wait_for("child.shutdown_timeout", child=slow).data["timeout"] == 0.5

    ray.get(sup.terminate_child.remote(brutal))
    assert not Path(marker[brutal]).exists()
    assert all(name_is_free(n) for n in (polite, slow, brutal))


SECOND_DRIVER = """
import sys, ray
from dspex.runtime.supervision import get_supervisor, render_tree
ray.init(address=sys.argv[1], namespace="second-driver", _node_ip_address="127.0.0.1",
         log_to_driver=False)
print(render_tree(ray.get(get_supervisor(sys.argv[2]).tree.remote())))
ray.shutdown()
"""


def test_a_second_driver_attaches_to_the_detached_root(roots, ray_cluster) -> None:
    root = unique("attach")
    sub, w = f"{root}.sub", f"{root}.w"
    roots.start(
        root,
        [ChildSpec(w, Worker), supervisor_spec(sub, [ChildSpec(f"{sub}.x", Worker)])],
        strategy="rest_for_one",
    )
    result = subprocess.run(
        [sys.executable, "-c", SECOND_DRIVER, ray_cluster.address, root],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines() == [
        f"{root} [supervisor rest_for_one] running",
        f"├── {w} [worker] running",
        f"└── {sub} [supervisor one_for_one] running",
        f"    └── {sub}.x [worker] running",
    ]
