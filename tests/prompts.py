"""Prompt callables for tests, named by dotted path in `prompt._target_` overrides."""

from __future__ import annotations

import asyncio
import threading
import time

from declarative_miner.protocol import Prompting

release = threading.Event()


def raises(request: Prompting) -> str:
    raise RuntimeError("the model fell over")


def wrong_type(request: Prompting) -> int:
    return 42


def slow(request: Prompting, seconds: float = 5.0) -> str:
    """Blocks a worker thread until `release` is set or `seconds` pass."""
    release.wait(seconds)
    return "slow " + request.messages[-1]


async def async_upper(request: Prompting) -> str:
    await asyncio.sleep(0)
    return request.messages[-1].upper()


def hotkey_of_caller(request: Prompting) -> str:
    return request.dendrite.hotkey


def counting(request: Prompting, calls: list = []) -> str:  # noqa: B006 - the shared call log
    calls.append(time.monotonic())
    return f"call {len(calls)}"
