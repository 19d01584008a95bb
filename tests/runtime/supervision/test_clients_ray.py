"""Clients of supervised services: ServiceRef, the cluster event stream, stop."""

from __future__ import annotations

import threading

import pytest
import ray
from supervision_helpers import (
    EventTail,
    Worker,
    actor,
    children,
    name_is_free,
    restarted,
    unique,
    wait_until,
)

from dspex.runtime.supervision import (
    ChildSpec,
    Event,
    ServiceRef,
    ServiceRestartedError,
    ServiceUnavailableError,
    stop_supervisor,
    subscribe,
)


def _gone(handle: object) -> bool:
    try:
        ray.get(handle.get.remote(), timeout=5)  # type: ignore[attr-defined]
    except ray.exceptions.RayActorError:
        return True
    return False


def test_service_ref_follows_restarts(roots) -> None:
    root = unique("svc")
    name = f"{root}.counter"
    sup = roots.start(root, [ChildSpec(name, Worker)])
    ref = ServiceRef(name, resolve_timeout=10)
    assert ref.call_sync("incr") == 1
    first = ref.actor_id

    victim = ref.resolve()
    ray.kill(victim)
    # ray.kill returns before the actor is gone: a call sent earlier could still succeed.
    wait_until(lambda: _gone(victim), what="the killed actor to be gone")
    # Not idempotent: Ray cannot say whether it ran, so it is not retried.
    with pytest.raises(ServiceRestartedError) as err:
        ref.call_sync("incr")
    assert err.value.name == name and err.value.method == "incr"

    # Idempotent: waits for the restarted actor and calls it.
    assert ref.call_sync("get", idempotent=True) == 0  # state starts over
    assert ref.actor_id not in (None, first)
    wait_until(lambda: restarted(sup, name, first), what="supervisor sees the restart")


async def test_service_ref_async_retries_idempotent_calls(roots) -> None:
    root = unique("asvc")
    name = f"{root}.counter"
    roots.start(root, [ChildSpec(name, Worker)])
    ref = ServiceRef(name)
    assert await ref.call("incr") == 1
    first = ref.actor_id
    old = ref.resolve()
    ray.kill(old)
    # ray.kill returns before the process is gone: wait until the old actor is dead.
    assert await _dead(old)
    assert await ref.call("get", idempotent=True) == 0
    assert ref.actor_id != first


def test_service_ref_gives_up_on_a_name_nobody_holds(ray_cluster) -> None:
    ref = ServiceRef(unique("nobody"), resolve_timeout=0.3)
    with pytest.raises(ServiceUnavailableError):
        ref.call_sync("get")


def test_driver_subscribers_receive_events_from_supervisor_actors(roots) -> None:
    root = unique("sub")
    name = f"{root}.w"
    received: list[Event] = []
    arrived = threading.Event()

    def on_event(event: Event) -> None:
        if event.source == root:
            received.append(event)
            if event.kind == "child.restarted":
                arrived.set()

    EventTail()  # makes sure the log exists before subscribing
    with subscribe(on_event, kinds=["child.*"]):
        sup = roots.start(root, [ChildSpec(name, Worker)])
        old = children(sup)[name].actor_id
        ray.kill(actor(name))
        assert arrived.wait(30), [e.kind for e in received]
    kinds = [e.kind for e in received]
    assert kinds[:1] == ["child.started"]
    assert "child.exited" in kinds and kinds[-1] == "child.restarted"
    assert all(e.kind.startswith("child.") for e in received)
    assert next(e for e in received if e.kind == "child.exited").data["actor_id"] == old


def test_stop_supervisor_stops_children_in_reverse_order(ray_cluster) -> None:
    from dspex.runtime.supervision import start_supervisor

    root = unique("stop")
    names = [f"{root}.{x}" for x in "abc"]
    tail = EventTail()
    sup = start_supervisor(root, [ChildSpec(n, Worker) for n in names])
    stop_supervisor(sup, timeout=60)
    tail.wait_for("supervisor.stopped")
    exits = [e.data["child"] for e in tail.matching(["child.exited"]) if e.source == root]
    assert exits == names[::-1]
    assert wait_until(lambda: all(name_is_free(n) for n in [root, *names]))


async def _dead(handle: object, deadline: float = 20.0) -> bool:
    import asyncio
    import time

    from ray.exceptions import RayActorError

    until = time.monotonic() + deadline
    while time.monotonic() < until:
        try:
            await handle.get.remote()  # type: ignore[attr-defined]
        except RayActorError:
            return True
        await asyncio.sleep(0.05)
    return False
