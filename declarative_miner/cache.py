"""The prompt cache: recent prompts on disk (diskcache), shared by every process on the machine."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Optional

import diskcache

from .errors import DuplicatePrompt, PromptFailed

log = logging.getLogger(__name__)

# Marks a prompt being computed now; a completion replaces it. Not a string a prompt returns.
_PENDING = ("declarative_miner", "pending")
_POLL = 0.02  # seconds between looks at a prompt another process is computing
CULL_INTERVAL = 30.0  # seconds between sweeps of expired entries


def _open(directory: str, size_limit: int, sync_writes: bool) -> Optional[diskcache.Cache]:
    # cull_limit=0: expiry and size culling run in `cull()` (the miner calls it in the background),
    # not inside every write on the request path. sqlite_synchronous=0 skips fsync: a crashed
    # process (even kill -9) loses nothing, only an OS crash or power loss could.
    options = dict(size_limit=size_limit, cull_limit=0, sqlite_synchronous=2 if sync_writes else 0)
    try:
        return diskcache.Cache(directory, **options)
    except sqlite3.DatabaseError as exc:
        first = exc
    try:  # a damaged cache: keep it for inspection, start afresh
        aside = Path(directory).with_name(f"{Path(directory).name}.damaged-{int(time.time())}")
        Path(directory).rename(aside)
        log.error("the prompt cache in %s cannot be opened (%s): moved it to %s and started afresh",
                  directory, first, aside)
        return diskcache.Cache(directory, **options)
    except (OSError, sqlite3.Error) as exc:
        log.error("the prompt cache in %s cannot be opened or replaced (%s; %s): SERVING WITHOUT A CACHE, "
                  "so duplicates are not detected", directory, first, exc)
        return None


class PromptCache:
    """Remembers prompts for `ttl` seconds. `on_hit="reject"` refuses a recent duplicate;
    `on_hit="reuse"` answers it with the stored completion, and identical prompts that arrive
    together are computed once (also across processes sharing the directory).

    A cache that cannot be read or written (full disk, lost permissions) degrades to a miss and
    logs why: requests are still served.
    """

    def __init__(self, directory: str, ttl: float, on_hit: str, size_limit: int, sync_writes: bool = False):
        self.ttl, self.on_hit = float(ttl), on_hit
        self._store = _open(directory, size_limit, sync_writes) if self.ttl > 0 else None
        self._computing: dict[str, asyncio.Future] = {}
        self.hits = 0

    @staticmethod
    def key(messages: list[str]) -> str:
        """sha256 of the messages, so any byte of difference is a different prompt."""
        return hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()

    async def run(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        """The completion for the prompt `key`: computed by `compute`, or as `on_hit` says.

        Raises:
            DuplicatePrompt: under `reject`, the prompt was claimed within `ttl` (by this or
                another process); exactly one of several identical prompts proceeds.
        """
        if self._store is None:
            return await compute()
        if self.on_hit == "reject":
            self._claim(key)
            try:
                return await compute()
            except BaseException:
                self._forget(key)
                raise
        return await self._reuse(key, compute)

    async def stream(self, key: str, produce: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        """`run` for a streamed answer: chunks pass through as produced, the whole is cached.

        A duplicate is refused (or a cached completion sent as one chunk) before any chunk.
        """
        if self._store is not None:
            if self.on_hit == "reject":
                self._claim(key)
            elif isinstance(cached := self._safely("look-up", self._store.get, key), str):
                self.hits += 1
                yield cached
                return
        chunks = []
        try:
            async with contextlib.aclosing(produce()) as produced:
                async for chunk in produced:
                    chunks.append(chunk)
                    yield chunk
        except BaseException:
            if self._store is not None:
                self._forget(key)
            raise
        if self._store is not None:
            self._remember(key, "".join(chunks))

    async def _reuse(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        while True:
            if key in self._computing:
                self.hits += 1
                return await asyncio.shield(self._computing[key])
            cached = self._safely("look-up", self._store.get, key)
            if isinstance(cached, str):
                self.hits += 1
                return cached
            if cached is None and self._safely("claim", self._store.add, key, _PENDING, expire=self.ttl) is not False:
                return await self._compute(key, compute)
            await asyncio.sleep(_POLL)  # another process computes it: wait for its completion

    async def _compute(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        future = asyncio.get_running_loop().create_future()
        self._computing[key] = future
        try:
            completion = await compute()
        except BaseException as exc:
            self._forget(key)
            future.set_exception(exc if isinstance(exc, Exception) else PromptFailed(
                "the identical prompt this request waited for was cancelled"))
            future.exception()  # retrieved here: waiters re-raise it, nobody else must
            raise
        else:
            self._remember(key, completion)
            future.set_result(completion)
            return completion
        finally:
            del self._computing[key]

    def _claim(self, key: str) -> None:
        """Claim a new prompt atomically across processes, or raise `DuplicatePrompt`."""
        if self._safely("claim", self._store.add, key, _PENDING, expire=self.ttl) is False:
            raise DuplicatePrompt(f"the same prompt was received in the last {self.ttl:g} s")

    def _forget(self, key: str) -> None:
        # A prompt that failed is no duplicate: the caller may send it again.
        self._safely("delete", self._store.delete, key)

    def _remember(self, key: str, completion: str) -> None:
        # Under `reject` the claim is all that matters: the completion is never read back.
        if self.on_hit == "reuse":
            self._safely("write", self._store.set, key, completion, expire=self.ttl)

    async def start_culling(self) -> None:
        """Cull every `CULL_INTERVAL` seconds, off the event loop, until `stop_culling`."""
        async def cull_forever() -> None:
            while True:
                await asyncio.sleep(CULL_INTERVAL)
                await asyncio.to_thread(self.cull)

        self._culling = asyncio.get_running_loop().create_task(cull_forever())

    async def stop_culling(self) -> None:
        self._culling.cancel()

    def cull(self) -> int:
        """Drop expired entries, then the oldest beyond `size_limit`; returns how many went."""
        if self._store is None:
            return 0
        return self._safely("cull", self._store.cull) or 0

    def _safely(self, what: str, operation: Callable, *args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            log.warning("prompt cache %s failed, serving without it: %s", what, exc)
            return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
