"""The prompt cache: a recent identical request is refused (`reject`) or answered again (`reuse`).

"Identical" means the same request type with the same input fields (roles included), answered
by the same callable with the same arguments (`namespace`), and, with `scope=caller`, asked by
the same caller. Entries live for `ttl` seconds in the store `state.store` names (state/).

Plain and streamed requests behave alike. Under `reuse` a duplicate of an answer being produced in
this process follows it chunk by chunk as it is produced (a plain one gets the whole), one produced
by another process is waited for, and one already answered is sent whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, AsyncIterator, Callable, Mapping, Optional

from ..errors import DuplicatePrompt, PromptFailed
from ..prompting import json_default
from ..state.prompts import ANSWERED, NEW

POLL = 0.02  # seconds between looks at a prompt another process is answering

_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=json_default).encode


def answerer(prompt: Mapping[str, Any], own_prompt: Optional[str] = None) -> str:
    """Who answers, as a key names it by default: the `prompt` config (`_target_` and every
    argument), and the class whose own `prompt` method overrides it, if any."""
    named = {**prompt, "prompt": f"{own_prompt}.prompt"} if own_prompt else dict(prompt)
    return json.dumps(named, sort_keys=True, default=str)


class _Answering:
    """An answer being produced in this process, which duplicates follow chunk by chunk."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.done = False
        self.failed = False
        self._changed = asyncio.Event()

    def add(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self._wake()

    def finish(self, failed: bool) -> None:
        self.done, self.failed = True, failed
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[str]:
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.chunks):
                sent += 1
                yield self.chunks[sent - 1]
            if self.done:
                if self.failed:
                    raise PromptFailed("the identical request this one followed failed or was abandoned")
                return
            await changed.wait()


class PromptCache:
    """Remembers requests for `ttl` seconds (0: off).

    Args:
        ttl: seconds a request counts as recent.
        on_hit: `reject` refuses a recent duplicate (409); `reuse` answers it with the stored
            answer, and identical requests that arrive together are answered once.
        scope: `global` (any caller's duplicate counts) or `caller` (only the same hotkey's).
        namespace: who answers (the callable and its arguments): part of every key.
        store: the store's prompts (state/prompts.py), opened by its owner; None when `ttl` is 0.
        hit: called once for each request answered from the cache (a metrics counter).
    """

    def __init__(self, ttl: float, on_hit: str, scope: str, namespace: str, store: Any,
                 hit: Callable[[], None] = lambda: None):
        self.ttl, self.on_hit, self.scope, self.namespace = float(ttl), on_hit, scope, namespace
        self._store = store if self.ttl > 0 else None
        self._answering: dict[str, _Answering] = {}
        self._hashed: dict[str, Any] = {}  # request type -> sha256 of the key's JSON up to its inputs
        self._on_hit = hit
        self.hits = 0  # requests answered from the cache since start, in this process

    def _hit(self) -> None:
        self.hits += 1
        self._on_hit()

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
        """Where entries live: the cache directory, memory or Redis."""
        return self._store.where if self._store is not None else "nowhere (off)"

    def clear(self) -> int:
        """Forget every stored answer; returns how many went."""
        return self._store.clear() if self._store is not None else 0

    async def run(self, key: str, compute: Callable[[], Any]) -> str:
        """The whole answer for request `key`: `compute()` (a coroutine giving text), or as `on_hit` says."""
        async def produce() -> AsyncIterator[str]:
            yield await compute()

        return "".join([chunk async for chunk in self.stream(key, produce)])

    async def stream(self, key: str, produce: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        """The answer for request `key`, chunk by chunk: produced by `produce()`, or as `on_hit` says.

        Raises:
            DuplicatePrompt: under `reject`, the request was claimed within `ttl` (by this or another
                process); exactly one of several identical requests proceeds.
        """
        if self._store is None:
            async for chunk in produce():
                yield chunk
            return
        while True:
            if self.on_hit == "reuse" and (answering := self._answering.get(key)) is not None:
                self._hit()
                async for chunk in answering.follow():
                    yield chunk
                return
            state = self._store.claim(key)
            if state == NEW:
                async for chunk in self._produce(key, produce):
                    yield chunk
                return
            if self.on_hit == "reject":
                raise DuplicatePrompt(f"the same prompt was received in the last {self.ttl:g} s")
            if state == ANSWERED and (stored := self._store.read(key)) is not None:
                self._hit()
                yield stored
                return
            await asyncio.sleep(POLL)  # another process answers it (or the answer just went): look again

    async def _produce(self, key: str, produce: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        """Answer `key` as its owner: duplicates in this process follow; the store learns the whole."""
        answering = self._answering[key] = _Answering()
        produced = produce()
        try:
            async for chunk in produced:
                answering.add(chunk)
                yield chunk
        except BaseException:
            answering.finish(failed=True)
            self._store.release(key)  # a failed answer is no duplicate: it may be asked again
            raise
        finally:
            await produced.aclose()
            del self._answering[key]
        answering.finish(failed=False)
        self._store.settle(key, "".join(answering.chunks) if self.on_hit == "reuse" else "", self.ttl)
