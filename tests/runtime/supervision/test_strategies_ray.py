"""Strategies and restart types on real Ray actors."""

from __future__ import annotations

import ray
from supervision_helpers import (
    EventTail,
    Exiter,
    Worker,
    actor,
    actor_ids,
    children,
    restarted,
    unique,
    wait_until,
)

from dspex.runtime.supervision import ChildSpec


def test_one_for_one_restarts_only_the_failed_child(roots) -> None:
    root = unique("ofo")
    names = [f"{root}.{x}" for x in "abc"]
    sup = roots.start(root, [ChildSpec(n, Worker) for n in names])
    before = actor_ids(sup)
    assert all(before.values())
    tail = EventTail()

    ray.kill(actor(names[1]))
    info = wait_until(lambda: restarted(sup, names[1], before[names[1]]), what="restart of b")

    after = actor_ids(sup)
    assert after[names[0]] == before[names[0]] and after[names[2]] == before[names[2]]
    assert info.restarts == 1
    assert tail.wait_for("child.exited", child=names[1]).data["reason"] == "killed"
    tail.wait_for("child.restarted", child=names[1])
    assert not tail.matching(["child.exited"], child=names[0])


def _order_after_kill(strategy: str, roots) -> tuple[list[tuple[str, str, str]], dict, dict, list]:
    root = unique(strategy.replace("_", ""))
    names = [f"{root}.{x}" for x in "abc"]
    sup = roots.start(root, [ChildSpec(n, Worker) for n in names], strategy=strategy)
    before = actor_ids(sup)
    tail = EventTail()
    ray.kill(actor(names[1]))
    tail.wait_for("child.restarted", child=names[-1])  # c is restarted last in both strategies
    seq = [
        (e.kind, e.data["child"], e.data.get("reason", ""))
        for e in tail.matching(["child.exited", "child.started"])
    ]
    return seq, before, actor_ids(sup), names


def test_one_for_all_stops_others_in_reverse_then_restarts_all_in_order(roots) -> None:
    seq, before, after, (a, b, c) = _order_after_kill("one_for_all", roots)
    assert seq == [
        ("child.exited", b, "killed"),
        ("child.exited", c, "shutdown"),
        ("child.exited", a, "shutdown"),
        ("child.started", a, ""),
        ("child.started", b, ""),
        ("child.started", c, ""),
    ]
    assert all(after[n] != before[n] for n in (a, b, c))


def test_rest_for_one_restarts_the_failed_child_and_later_ones(roots) -> None:
    seq, before, after, (a, b, c) = _order_after_kill("rest_for_one", roots)
    assert seq == [
        ("child.exited", b, "killed"),
        ("child.exited", c, "shutdown"),
        ("child.started", b, ""),
        ("child.started", c, ""),
    ]
    assert after[a] == before[a] and after[b] != before[b] and after[c] != before[c]


def test_restart_types(roots) -> None:
    root = unique("types")
    perm, trans, trans_crash, temp = (f"{root}.{x}" for x in ("perm", "trans", "trans2", "temp"))
    sup = roots.start(
        root,
        [
            ChildSpec(perm, Exiter),
            ChildSpec(trans, Exiter, restart="transient"),
            ChildSpec(trans_crash, Worker, restart="transient"),
            ChildSpec(temp, Worker, restart="temporary"),
        ],
    )
    before = actor_ids(sup)
    tail = EventTail()

    actor(perm).finish.remote("normal")  # permanent: restarted even after a clean exit
    actor(trans).finish.remote("normal")  # transient, clean: stays terminated
    actor(trans_crash).crash_exit.remote()  # transient, crash: restarted
    ray.kill(actor(temp))  # temporary: never restarted, removed

    wait_until(lambda: restarted(sup, perm, before[perm]), what="permanent restart")
    wait_until(lambda: restarted(sup, trans_crash, before[trans_crash]), what="transient restart")
    wait_until(lambda: temp not in children(sup), what="temporary removed")
    for name in (perm, trans, trans_crash, temp):
        tail.wait_for("child.exited", child=name)
    for name in (perm, trans_crash):
        tail.wait_for("child.restarted", child=name)

    state = children(sup)
    assert state[trans].state == "terminated" and state[trans].actor_id is None
    exits = {e.data["child"]: e.data["reason"] for e in tail.matching(["child.exited"])}
    assert exits == {perm: "normal", trans: "normal", trans_crash: "crashed", temp: "killed"}
    restarts = {e.data["child"] for e in tail.matching(["child.restarted"])}
    assert restarts == {perm, trans_crash}
