"""Batch or interactive: the mode follows the code into tasks and threads, and
interactive wins when the two nest."""

from __future__ import annotations

import asyncio

from dspex.primitives.workload import batch_work, current_workload, interactive_work
from dspex.utils.aio import run_sync


def test_outside_any_block_work_is_interactive() -> None:
    assert current_workload() == "interactive"


def test_blocks_set_the_mode_and_restore_it() -> None:
    with batch_work():
        assert current_workload() == "batch"
        with interactive_work():
            assert current_workload() == "interactive"
            with batch_work():  # a served request that evaluates inside still serves
                assert current_workload() == "interactive"
        assert current_workload() == "batch"
    assert current_workload() == "interactive"


async def test_the_mode_follows_tasks_and_threads() -> None:
    async def mode() -> str:
        return current_workload()

    with batch_work():
        seen = await asyncio.gather(mode(), asyncio.to_thread(current_workload))
        assert seen == ["batch", "batch"]
    assert await asyncio.ensure_future(mode()) == "interactive"


def test_the_mode_follows_a_sync_call_onto_the_background_loop() -> None:
    async def mode() -> str:
        return current_workload()

    with batch_work():
        assert run_sync(mode()) == "batch"
    assert run_sync(mode()) == "interactive"
