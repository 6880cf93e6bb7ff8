"""What a prompt callable may return, turned into a completion or a stream of text chunks.

A prompt returns a `str`, a filled `Prompting`, or yields text chunks (a plain or an async
generator). Plain callables and generators run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Iterator, Optional

from ..errors import PromptFailed, RequestError
from ..prompting import Prompting
from .scheduler import current_slot

log = logging.getLogger(__name__)

_DONE = object()


class _AsPromptFailure:
    # A class, not @contextmanager: it wraps every answer, and a generator-based one cost 2 µs more.
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], traceback: Any) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, RequestError):
            log.error("the prompt raised", exc_info=exc)
            raise PromptFailed(f"{type(exc).__name__}: {exc}") from exc


_AS_PROMPT_FAILURE = _AsPromptFailure()  # holds no state: one serves every request


def as_prompt_failure() -> _AsPromptFailure:
    """Anything a prompt raises, except the miner's own request errors, is a 500 with its reason."""
    return _AS_PROMPT_FAILURE


class CallKinds:
    """How a prompt callable is called: a "coroutine" or "async generator" function on the loop,
    or a "plain" one in a worker thread (a callable object, such as a model backend, is what its
    __call__ is). Each callable is inspected once: inspect's checks cost 3 µs a request."""

    def __init__(self):
        self._known: dict[Any, str] = {}

    def __call__(self, fn: Callable) -> str:
        key = getattr(fn, "__func__", fn)  # a bound method: its function, the same at every access
        try:
            return self._known[key]
        except KeyError:
            kind = self._known[key] = self._inspect(fn)
            return kind
        except TypeError:  # an unhashable callable object
            return self._inspect(fn)

    @staticmethod
    def _inspect(fn: Callable) -> str:
        if not (inspect.isroutine(fn) or isinstance(fn, functools.partial)):
            fn = fn.__call__
        if inspect.iscoroutinefunction(fn):
            return "coroutine"
        return "async generator" if inspect.isasyncgenfunction(fn) else "plain"


async def in_thread(executor: Executor, fn: Callable, *args: Any) -> Any:
    """`fn(*args)` in `executor`. A thread cannot be stopped: if the caller is cancelled (its
    deadline passed), the request's scheduler slot stays taken until the thread really ends, so
    `axon.max_concurrency` bounds the work truly running, while the caller answers at once."""
    running = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if (slot := current_slot.get()) is not None:
            slot.lend_until(running)
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
        async with contextlib.aclosing(result):  # an abandoned request stops its generator now
            async for chunk in result:
                yield _text(chunk)
    elif inspect.isgenerator(result):
        while (chunk := await in_thread(executor, next, result, _DONE)) is not _DONE:
            yield _text(chunk)
    else:
        yield _text(result)


async def completion_of(result: Any, executor: Executor) -> str:
    """The whole completion of `result`; a plain generator is drained in one worker call, which
    stops at the next chunk once the request is abandoned (its caller left or its deadline passed)."""
    if inspect.isgenerator(result):
        abandoned = threading.Event()
        try:
            return "".join(await in_thread(executor, _drain, result, abandoned))
        except asyncio.CancelledError:
            abandoned.set()
            raise
    if inspect.isasyncgen(result):  # read directly: through chunks_of, each chunk cost twice as much
        try:
            return "".join([_text(chunk) async for chunk in result])
        finally:  # as contextlib.aclosing, without its two coroutines a request
            await result.aclose()
    return _text(result)


def _drain(chunks: Iterator[Any], abandoned: threading.Event) -> list[str]:
    with contextlib.closing(chunks):  # closed early, the generator's own `finally` runs
        texts = []
        for chunk in chunks:
            texts.append(_text(chunk))
            if abandoned.is_set():
                break
        return texts


def outputs_of(result: Any, synapse: Any, request: Any) -> dict[str, Any]:
    """The outputs an answer gave: the filled request, a mapping of output fields, or (for a type
    with one output) the value itself; each checked against its declared type."""
    if result is request:
        outputs = synapse.outputs_of(request)
    elif isinstance(result, dict):
        outputs = result
    elif len(synapse.outputs) == 1:
        outputs = {next(iter(synapse.outputs)): result}
    else:
        raise PromptFailed(f"{synapse.name}'s answer returned {type(result).__name__}; expected the request, "
                           f"or a mapping of {', '.join(synapse.outputs)}")
    return synapse.check_outputs(outputs)
