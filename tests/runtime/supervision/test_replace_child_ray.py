"""``replace_child``: a child's spec swapped in place (OTP's code change): restarted on the
new spec without counting a restart, kept for later crashes, the old spec put back when
the new one cannot start; ``stopped_by_plan`` tells a planned stop from a death."""

from __future__ import annotations

import dataclasses

import pytest
import ray
from supervision_helpers import Worker, actor, children, restarted, unique, wait_until

from dspex.runtime.supervision import ChildSpec
from dspex.runtime.supervision.errors import ChildStartError


def test_replace_child_restarts_on_the_new_spec_and_keeps_it(roots) -> None:
    root = unique("swap")
    name = f"{root}.w"
    sup = roots.start(root, [ChildSpec(name, Worker, labels={"version": "1"})])
    first = children(sup)[name].actor_id
    assert ray.get(actor(name).incr.remote()) == 1

    new = ChildSpec(name, Worker, labels={"version": "2"})
    info = ray.get(sup.replace_child.remote(new))
    assert info.state == "running" and info.restarts == 0 and info.actor_id != first
    assert ray.get(sup.stopped_by_plan.remote(first)) is True
    assert ray.get(sup.child_spec.remote(name)).labels == {"version": "2"}
    assert ray.get(actor(name).get.remote()) == 0  # a fresh process

    # A crash afterwards restarts it from the new spec, and counts.
    second = info.actor_id
    ray.kill(actor(name))
    back = wait_until(lambda: restarted(sup, name, second), what="the restart")
    assert back.restarts == 1 and ray.get(sup.stopped_by_plan.remote(second)) is False
    assert ray.get(sup.child_spec.remote(name)).labels == {"version": "2"}
    assert "version=2" in _tree_labels(sup)

    # Without restart only the spec changes.
    running = children(sup)[name].actor_id
    ray.get(sup.replace_child.remote(ChildSpec(name, Worker, labels={"version": "3"}), restart=False))
    assert children(sup)[name].actor_id == running


def test_a_new_spec_that_cannot_start_puts_the_old_one_back(roots) -> None:
    root = unique("swapfail")
    name = f"{root}.w"
    old = ChildSpec(name, Worker, labels={"version": "1"})
    sup = roots.start(root, [old])
    broken = dataclasses.replace(old, kwargs={"fail": True}, labels={"version": "2"})
    with pytest.raises(ChildStartError):
        ray.get(sup.replace_child.remote(broken))
    assert children(sup)[name].state == "running"
    assert ray.get(sup.child_spec.remote(name)).labels == {"version": "1"}
    assert ray.get(actor(name).incr.remote()) == 1


def _tree_labels(sup: object) -> str:
    from dspex.runtime.supervision import render_tree

    return render_tree(ray.get(sup.tree.remote()))  # type: ignore[attr-defined]
