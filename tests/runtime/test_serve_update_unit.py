"""Pieces of the hot swap without a cluster: labels in specs and trees, swapping a
spec, and a replica that drains and swaps its learned state in place."""

from __future__ import annotations

import asyncio
import os
import pickle

import pytest
from ray import cloudpickle

from dspex.errors import ReplicaDrainingError
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.runtime.serve import ModuleActor, _replica_spec, _versioned
from dspex.runtime.status_rows import tree_node
from dspex.runtime.supervision.child_spec import ChildSpec
from dspex.runtime.supervision.state import SupervisorState
from dspex.runtime.supervision.tree import TreeNode, render_tree


class Tagged(Module):
    def __init__(self) -> None:
        super().__init__()
        self.tag = Predict("text -> answer")

    async def aforward(self, text: str, gate: asyncio.Event | None = None) -> Prediction:
        demos = len(self.tag.demos)  # read when the request starts
        if gate is not None:
            await gate.wait()
        return Prediction(answer=text, demos=demos, pid=os.getpid())


class Worker:
    pass


def test_labels_travel_with_the_spec_and_show_in_the_tree() -> None:
    spec = ChildSpec("w", Worker, labels={"version": 3})
    assert dict(pickle.loads(pickle.dumps(spec)).labels) == {"version": "3"}
    node = TreeNode("root", "supervisor", strategy="one_for_one", children=(
        TreeNode("w", restarts=1, labels=(("version", "3"),)),
    ))
    assert render_tree(node).splitlines()[1] == "└── w [worker] running restarts=1 version=3"
    assert tree_node(node)["children"][0]["labels"] == {"version": "3"}


def test_replace_spec_keeps_the_place_and_the_count() -> None:
    state = SupervisorState([ChildSpec("a", Worker), ChildSpec("b", Worker)])
    state.mark_running("a", "id", None)
    old = state.replace_spec(ChildSpec("a", Worker, labels={"version": "2"}))
    assert old.labels == {} and state.get("a").spec.labels == {"version": "2"}
    assert state.names() == ["a", "b"] and state.get("a").state == "running"


def test_a_versioned_spec_keeps_one_step_back() -> None:
    spec = _replica_spec("qa", 0, b"one", 8, False, None)
    assert spec.kwargs["version"] == 1 and spec.labels == {"version": "1"}
    two = _versioned(spec, b"two", 2)
    assert two.args == (b"two",) and two.kwargs["rollback"] == (1, b"one")
    assert two.labels == {"version": "2"} and two.kwargs["max_concurrency"] == 8
    back = _versioned(two, b"one", 1, keep_rollback=False)
    assert back.kwargs["rollback"] is None and back.kwargs["version"] == 1


async def test_a_replica_swaps_state_in_place_and_drains() -> None:
    payload = cloudpickle.dumps((Tagged(), {}))
    replica = ModuleActor(payload, service="qa", use_pools=False)
    gate = asyncio.Event()
    old_request = asyncio.ensure_future(replica.acall(text="old", gate=gate))
    while (await replica.stats())["in_flight"] == 0:  # until it runs on the old state
        await asyncio.sleep(0)

    learned = Tagged()
    learned.tag.demos = [{"text": "x", "answer": "X"}]
    assert await replica.load_state(learned.dump_state(), 2) == os.getpid()
    assert (await replica.acall(text="new")).demos == 1
    assert (await replica.stats())["version"] == 2

    draining = asyncio.ensure_future(replica.terminate("shutdown"))
    while not replica._draining:
        await asyncio.sleep(0)
    with pytest.raises(ReplicaDrainingError):
        await replica.acall(text="late")
    with pytest.raises(ReplicaDrainingError):
        await anext(replica.stream({"text": "late"}, []))
    assert not draining.done(), "terminate returned with a request in flight"
    gate.set()
    assert (await old_request).demos == 0  # finished on the state it started with
    await asyncio.wait_for(draining, 5)
