"""The prompt cache: a recent identical request is refused (`reject`) or answered again (`reuse`).

"Identical" means the same request type with the same input fields (roles included), answered
by the same callable with the same arguments (`namespace`), and, with `scope=caller`, asked by
the same caller. Entries live for `ttl` seconds in a store (see stores.py) that no request
waits on disk for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional

from ..errors import DuplicatePrompt, PromptFailed
from .stores import ANSWERED, NEW

_POLL = 0.02  # seconds between looks at a prompt another process is answering
CULL_INTERVAL = 30.0  # seconds between sweeps of expired entries on disk
RECENT = 4096  # completions this process keeps in memory under `reuse`


_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode  # json.dumps' text, without its set-up each call


def answerer(prompt: Mapping[str, Any], own_prompt: Optional[str] = None) -> str:
    """Who answers, as a key names it by default: the `prompt` config (`_target_` and every
    argument), and the class whose own `prompt` method overrides it, if any."""
    named = {**prompt, "prompt": f"{own_prompt}.prompt"} if own_prompt else dict(prompt)
    return json.dumps(named, sort_keys=True, default=str)


class PromptCache:
    """Remembers requests for `ttl` seconds (0: off).

    Args:
        ttl: seconds a request counts as recent.
        on_hit: `reject` refuses a recent duplicate (409); `reuse` answers it with the stored
            completion, and identical requests that arrive together are computed once (also
            across processes sharing the store).
        scope: `global` (any caller's duplicate counts) or `caller` (only the same hotkey's).
        namespace: who answers (the callable and its arguments): part of every key.
        store: a `LocalStore` or `RedisStore`; None when `ttl` is 0.
    """

    def __init__(self, ttl: float, on_hit: str, scope: str, namespace: str, store: Any):
        self.ttl, self.on_hit, self.scope, self.namespace = float(ttl), on_hit, scope, namespace
        self._store = store if self.ttl > 0 else None
        self._computing: dict[str, asyncio.Future] = {}
        self._recent: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._culling: Optional[asyncio.Task] = None
        self._hashed: dict[str, Any] = {}  # request type -> sha256 of the key's JSON up to its inputs
        self.hits = 0

    def key(self, request_type: str, inputs: Mapping[str, Any], caller: Optional[str]) -> str:
        """sha256 of who answers, what was asked and (scope `caller`) by whom: of the JSON list
        `[namespace, request_type, inputs, caller or null]` (ensure_ascii off, keys sorted), the
        same bytes whatever the version, so a restart after an upgrade keeps its saved prompts."""
        if (start := self._hashed.get(request_type)) is None:  # the namespace is long: hashed once per type
            start = hashlib.sha256(f"[{_json([self.namespace, request_type])[1:-1]}, ".encode())
            self._hashed[request_type] = start
        digest = start.copy()  # the rest, `inputs, caller]`, is the tail of one list's JSON
        digest.update(_json([inputs, caller if self.scope == "caller" else None])[1:].encode())
        return digest.hexdigest()

    @property
    def where(self) -> str:
        """Where entries live: the cache directory, or Redis."""
        return self._store.where if self._store is not None else "nowhere (off)"

    @property
    def unsaved(self) -> int:
        """Answers not yet on disk: what a kill -9 now would lose."""
        return self._store.unsaved if self._store is not None else 0

    def open(self, clear: bool = False) -> tuple[int, int]:
        """Open the store and restore its fresh entries; returns (restored, cleared)."""
        return self._store.open(clear) if self._store is not None else (0, 0)

    async def run(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        """The completion for request `key`: computed by `compute`, or as `on_hit` says.

        Raises:
            DuplicatePrompt: under `reject`, the request was claimed within `ttl` (by this or
                another process); exactly one of several identical requests proceeds.
        """
        if self._store is None:
            return await compute()
        if self.on_hit == "reject":
            self._claim_or_refuse(key)
            return await self._answer(key, compute)
        while True:
            if key in self._computing:
                self.hits += 1
                return await asyncio.shield(self._computing[key])
            if (cached := self._remembered(key)) is not None:
                return cached
            state = self._claim(key)
            if state == NEW:
                return await self._coalesced(key, compute)
            if state == ANSWERED:
                if (cached := await self._read(key)) is not None:
                    return cached
            else:
                await asyncio.sleep(_POLL)  # another process answers it: wait for its completion

    async def stream(self, key: str, produce: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        """`run` for a streamed answer: chunks pass through as produced, the whole is cached.

        A duplicate is refused (or a cached completion sent as one chunk) before any chunk.
        """
        owned = False
        if self._store is not None:
            if self.on_hit == "reject":
                self._claim_or_refuse(key)
                owned = True
            elif (cached := self._remembered(key)) is not None:
                yield cached
                return
            else:
                state = self._claim(key)
                if state == ANSWERED and (cached := await self._read(key)) is not None:
                    yield cached
                    return
                owned = state == NEW  # being answered elsewhere: stream a fresh answer rather than wait
        chunks = []
        try:
            async with contextlib.aclosing(produce()) as produced:
                async for chunk in produced:
                    chunks.append(chunk)
                    yield chunk
        except BaseException:
            if owned:
                self._store.release(key)
            raise
        if owned:
            self._remember(key, "".join(chunks))

    def _claim(self, key: str) -> str:
        now = time.time()
        return self._store.claim(key, now, now + self.ttl)

    def _claim_or_refuse(self, key: str) -> None:
        if self._claim(key) != NEW:
            raise DuplicatePrompt(f"the same prompt was received in the last {self.ttl:g} s")

    def _remembered(self, key: str) -> Optional[str]:
        if (cached := self._recent.get(key)) is not None:
            self.hits += 1
        return cached

    async def _read(self, key: str) -> Optional[str]:
        """The stored completion of an answered `key`; if it is gone (culled, never written), the
        entry is dropped so that the next look claims it."""
        if (cached := await asyncio.to_thread(self._store.read, key)) is None:
            self._store.release(key)
            return None
        self.hits += 1
        return cached

    async def _answer(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        try:
            completion = await compute()
        except BaseException:
            self._store.release(key)  # a prompt that failed is no duplicate: it may be asked again
            raise
        self._remember(key, completion)
        return completion

    async def _coalesced(self, key: str, compute: Callable[[], Awaitable[str]]) -> str:
        """`_answer`, with identical requests arriving meanwhile waiting for this one."""
        future = asyncio.get_running_loop().create_future()
        self._computing[key] = future
        try:
            completion = await self._answer(key, compute)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else PromptFailed(
                "the identical prompt this request waited for was cancelled"))
            future.exception()  # retrieved here: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(completion)
            return completion
        finally:
            del self._computing[key]

    def _remember(self, key: str, completion: str) -> None:
        expires = time.time() + self.ttl
        if self.on_hit == "reject":  # the fact is all that matters: the completion is never read back
            self._store.answered(key, None, expires)
            return
        self._recent[key] = completion
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        self._store.answered(key, completion, expires)

    async def start(self) -> None:
        """Start saving, and culling expired entries every `CULL_INTERVAL` s (on the serving loop)."""
        if self._store is None:
            return
        self._store.start()

        async def cull_forever() -> None:
            while True:
                await asyncio.sleep(CULL_INTERVAL)
                await asyncio.to_thread(self._store.cull)

        self._culling = asyncio.get_running_loop().create_task(cull_forever())

    async def stop(self) -> None:
        """Stop culling and write every answer still queued (a clean stop loses none)."""
        if self._culling is not None:
            self._culling.cancel()
        if self._store is not None:
            await asyncio.to_thread(self._store.stop)

    def cull(self) -> int:
        """Drop expired entries on disk, then the oldest beyond `size_limit`; returns how many went."""
        return self._store.cull() if self._store is not None else 0

    def close(self) -> None:
        """Close the disk copy (the claims stay: a fork's workers share them)."""
        if self._store is not None:
            self._store.close()

    def release_memory(self) -> None:
        """Drop the claims too: the miner is done."""
        if self._store is not None:
            self._store.release_memory()
