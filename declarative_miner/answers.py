"""What a prompt callable may return, turned into a completion or a stream of text chunks.

A prompt returns a `str`, a filled `Prompting`, or yields text chunks (a plain or an async
generator). Plain callables and generators run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable

from .errors import PromptFailed
from .protocol import Prompting

_DONE = object()


async def in_thread(executor: Executor, fn: Callable, *args: Any) -> Any:
    """`fn(*args)` in `executor`. If the caller is cancelled, wait for the thread to end before
    re-raising: a thread cannot be stopped, and the caller's scheduler slot must stay taken
    until it really is free, so `axon.max_concurrency` bounds the work truly running."""
    running = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, Prompting):
        return result.completion
    raise PromptFailed(f"the prompt returned {type(result).__name__}; expected str, Prompting or text chunks")


async def chunks_of(result: Any, executor: Executor) -> AsyncIterator[str]:
    """The text of `result` chunk by chunk (one chunk for a plain completion)."""
    if inspect.isasyncgen(result):
        async for chunk in result:
            yield _text(chunk)
    elif inspect.isgenerator(result):
        while (chunk := await in_thread(executor, next, result, _DONE)) is not _DONE:
            yield _text(chunk)
    else:
        yield _text(result)


async def completion_of(result: Any, executor: Executor) -> str:
    """The whole completion of `result`; a plain generator is drained in one worker call."""
    if inspect.isgenerator(result):
        return "".join(map(_text, await in_thread(executor, list, result)))
    return "".join([chunk async for chunk in chunks_of(result, executor)])
