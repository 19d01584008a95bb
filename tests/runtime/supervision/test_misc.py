"""Dead letters, tree rendering and the Supervised mixin, without Ray."""

from __future__ import annotations

import asyncio
import os

import pytest

from dspex.runtime.supervision import (
    DeadLetter,
    DeadLetterQueue,
    ExitReason,
    Supervised,
    TreeNode,
    render_tree,
    supervised_class,
)


def failing_letter(source: str = "eval", value: int = 1) -> DeadLetter:
    try:
        raise ValueError(f"bad input {value}")
    except ValueError as exc:
        return DeadLetter.from_exception(source, {"q": value}, exc, attempts=3, first_failed_at=1.0)


def test_dead_letter_records_the_failure() -> None:
    letter = failing_letter()
    assert letter.error_type == "builtins.ValueError"
    assert letter.error_message == "bad input 1"
    assert "ValueError: bad input 1" in letter.traceback
    assert letter.attempts == 3 and letter.first_failed_at == 1.0 < letter.last_failed_at
    assert letter.input == {"q": 1}


def test_dead_letter_queue_put_list_count_clear() -> None:
    queue = DeadLetterQueue(capacity=3)
    for i in range(5):
        queue.put(failing_letter(value=i))
    assert queue.count() == 3 and queue.dropped == 2
    assert [d.input["q"] for d in queue.list(2)] == [3, 4]
    assert [d.input["q"] for d in queue.list(None)] == [2, 3, 4]
    assert queue.clear() == 3 and queue.count() == 0
    with pytest.raises(TypeError):
        queue.put("not a letter")  # type: ignore[arg-type]


def test_render_tree() -> None:
    tree = TreeNode(
        "app",
        "supervisor",
        strategy="one_for_one",
        children=(
            TreeNode("cache"),
            TreeNode(
                "lm",
                "supervisor",
                restarts=1,
                strategy="rest_for_one",
                children=(TreeNode("pool", state="restarting", restarts=3), TreeNode("limiter")),
            ),
            TreeNode("runs", state="terminated"),
        ),
    )
    assert render_tree(tree) == "\n".join(
        [
            "app [supervisor one_for_one] running",
            "├── cache [worker] running",
            "├── lm [supervisor rest_for_one] running restarts=1",
            "│   ├── pool [worker] restarting restarts=3",
            "│   └── limiter [worker] running",
            "└── runs [worker] terminated",
        ]
    )


class Plain:
    def __init__(self, x: int) -> None:
        self.x = x

    def ping(self) -> str:  # the protocol's ping wins over a user method
        return "user"


def test_supervised_class_wraps_plain_classes_once() -> None:
    wrapped = supervised_class(Plain)
    assert issubclass(wrapped, Plain) and issubclass(wrapped, Supervised)
    assert supervised_class(Plain) is wrapped
    assert supervised_class(wrapped) is wrapped
    assert wrapped(3).x == 3 and wrapped.__name__ == "Plain"


async def test_watch_returns_the_reason_given_to_exit() -> None:
    child = supervised_class(Plain)(1)
    watcher = asyncio.ensure_future(child.watch())
    await asyncio.sleep(0)
    assert not watcher.done()
    assert await child.ping() is True
    child.exit("shutdown:draining")
    assert await asyncio.wait_for(watcher, 5) == ExitReason("shutdown", "draining")
    assert await child.watch() == ExitReason("shutdown", "draining")
    child.exit("boom")  # the first reason stands
    assert child.exit_reason == ExitReason("shutdown", "draining")


async def test_ready_works_outside_an_actor() -> None:
    info = await supervised_class(Plain)(1).ready()
    assert info["pid"] == os.getpid() and info["actor_id"] is None
