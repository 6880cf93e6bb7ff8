"""The request path's deadline keeps asyncio.timeout_at's contract (server/deadline.py)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from declarative_miner.server.deadline import Deadline


def run(coroutine_function):
    return uvloop.run(coroutine_function())  # the loop uvicorn serves on


def test_a_passed_deadline_raises_timeout_error_and_leaves_the_task_uncancelled():
    async def late():
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            with Deadline(loop.time() + 0.01):
                await asyncio.Event().wait()
        assert asyncio.current_task().cancelling() == 0
        await asyncio.sleep(0)  # no cancellation is left pending for the next await
        return "went on"

    assert run(late) == "went on"


def test_work_done_in_time_is_untouched_and_its_timer_is_gone():
    async def prompt():
        loop = asyncio.get_running_loop()
        with Deadline(loop.time() + 0.05):
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # past the deadline: the cancelled timer must not fire
        return "answered"

    assert run(prompt) == "answered"


def test_a_cancellation_from_elsewhere_passes_through_as_cancellation():
    async def caller_left():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        loop.call_soon(task.cancel)  # the client disconnected, not the deadline
        with Deadline(loop.time() + 10):
            await asyncio.Event().wait()

    with pytest.raises(asyncio.CancelledError):
        run(caller_left)
