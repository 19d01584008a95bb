"""Every way a child can die is noticed and repaired; restart latency measured.

The figures are printed (run with -s to see them); the assertions are only a
sanity bound, since timing on a shared 2-core machine varies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from supervision_helpers import (
    ON_HEAD,
    EventTail,
    Worker,
    actor,
    children,
    restarted,
    unique,
    wait_until,
)

from dspex.runtime.supervision import ChildSpec

SANITY_BOUND = 10.0  # seconds; the target is < 2 s


def _kill(handle: Any) -> None:
    ray.kill(handle)


def _exit_in_call(handle: Any) -> None:
    handle.crash_exit.remote()


def _segfault(handle: Any) -> None:
    handle.segfault.remote()


def _hang(handle: Any) -> None:
    handle.hang.remote(60)


DEATHS: list[tuple[str, Callable[[Any], None], str]] = [
    ("ray.kill", _kill, "killed"),
    ("os._exit(1) in a call", _exit_in_call, "crashed"),
    ("SIGSEGV in a call", _segfault, "crashed"),
    ("event loop blocked", _hang, "hung"),
]


def test_each_kind_of_death_is_noticed_and_the_child_restarted(roots) -> None:
    root = unique("deaths")
    victim = f"{root}.victim"
    sup = roots.start(
        root,
        [ChildSpec(victim, Worker)],
        ping_interval=0.25,
        ping_timeout=1.0,
        max_restarts=10,
    )
    tail = EventTail()

    # A method error is returned to the caller; the actor lives on (Ray semantics).
    handle = actor(victim)
    with pytest.raises(ValueError):
        ray.get(handle.fail.remote())
    assert ray.get(handle.incr.remote()) == 1
    assert children(sup)[victim].restarts == 0

    figures = {}
    for label, kill, expected in DEATHS:
        old = children(sup)[victim].actor_id
        handle = actor(victim)
        started = time.monotonic()
        kill(handle)
        wait_until(lambda old=old: restarted(sup, victim, old), SANITY_BOUND, label)
        ray.get(actor(victim).get.remote(), timeout=SANITY_BOUND)  # it answers
        figures[label] = time.monotonic() - started
        exit_event = tail.wait_for("child.exited", actor_id=old)
        assert exit_event.data["reason"] == expected, (label, exit_event.data)

    print("\nrestart latency (death -> new actor answering):")
    for label, seconds in figures.items():
        print(f"  {label:<24} {seconds * 1000:7.0f} ms")
    assert all(seconds < SANITY_BOUND for seconds in figures.values()), figures
    assert children(sup)[victim].restarts == len(DEATHS)


def test_a_child_on_a_lost_node_is_restarted_on_a_surviving_node(roots, ray_cluster) -> None:
    node = ray_cluster.add_node(
        num_cpus=1, node_ip_address="127.0.0.1", resources={"dspex_test_node_b": 1}
    )
    try:
        ray_cluster.wait_for_nodes()
        root = unique("nodeloss")
        remote_child, local_child = f"{root}.far", f"{root}.near"
        # Soft affinity: prefer node B, but a restart may land anywhere once B is gone.
        prefer_b = NodeAffinitySchedulingStrategy(node.node_id, soft=True)
        sup = roots.start(
            root,
            [
                ChildSpec(remote_child, Worker, actor_options={"scheduling_strategy": prefer_b}),
                ChildSpec(local_child, Worker, actor_options=ON_HEAD),
            ],
        )
        before = children(sup)
        assert before[remote_child].node_id == node.node_id
        assert before[local_child].node_id == ray_cluster.head_node.node_id
        tail = EventTail()

        started = time.time()
        ray_cluster.remove_node(node, allow_graceful=False)
        exit_event = tail.wait_for("child.exited", SANITY_BOUND * 3, child=remote_child)
        detected = exit_event.time - started
        info = wait_until(
            lambda: restarted(sup, remote_child, before[remote_child].actor_id),
            SANITY_BOUND * 3,
            "restart after node loss",
        )
        ray.get(actor(remote_child).get.remote(), timeout=SANITY_BOUND)
        total = time.time() - started
    finally:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)

    print(f"\nnode loss: detected after {detected:.2f} s, child answering again after {total:.2f} s")
    assert exit_event.data["reason"] == "node_lost"
    assert info.node_id == ray_cluster.head_node.node_id
    assert children(sup)[local_child].actor_id == before[local_child].actor_id  # one_for_one
    assert total < SANITY_BOUND * 3
