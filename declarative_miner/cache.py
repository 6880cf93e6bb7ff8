"""The prompt cache: recent prompts on disk (diskcache), shared by every process on the machine."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from typing import Optional

import diskcache

from .errors import DuplicatePrompt

log = logging.getLogger(__name__)

_PENDING = None  # the value of a claimed prompt whose completion is not known yet


class PromptCache:
    """Remembers prompts for `ttl` seconds. `on_hit="reject"` refuses a recent duplicate;
    `on_hit="reuse"` answers it with the stored completion.

    A cache that cannot be read or written (full disk, lost permissions) degrades to a miss and
    logs why: requests are still served.
    """

    def __init__(self, directory: str, ttl: float, on_hit: str, size_limit: int):
        self.ttl, self.on_hit = float(ttl), on_hit
        self._store = diskcache.Cache(directory, size_limit=size_limit) if self.ttl > 0 else None

    @property
    def enabled(self) -> bool:
        return self._store is not None

    @staticmethod
    def key(messages: list[str]) -> str:
        """sha256 of the messages, so any byte of difference is a different prompt."""
        return hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()

    def _degraded(self, what: str, exc: Exception) -> None:
        log.warning("prompt cache %s failed, serving without it: %s", what, exc)

    def claim(self, key: str) -> Optional[str]:
        """Before computing: the cached completion to reuse, or None to compute it now.

        Under `reject` the prompt is claimed atomically across processes, so of two identical
        prompts exactly one proceeds and the other gets `DuplicatePrompt`.
        """
        if self._store is None:
            return None
        try:
            if self.on_hit == "reject":
                if not self._store.add(key, _PENDING, expire=self.ttl):
                    raise DuplicatePrompt(f"the same prompt was received in the last {self.ttl:g} s")
                return None
            return self._store.get(key)
        except (sqlite3.Error, OSError) as exc:
            self._degraded("look-up", exc)
            return None

    def store(self, key: str, completion: str) -> None:
        """After computing: remember the completion for `ttl` seconds."""
        if self._store is None:
            return
        try:
            self._store.set(key, completion, expire=self.ttl)
        except (sqlite3.Error, OSError) as exc:
            self._degraded("write", exc)

    def forget(self, key: str) -> None:
        """A prompt that failed is no duplicate: the caller may send it again."""
        if self._store is None:
            return
        try:
            self._store.delete(key)
        except (sqlite3.Error, OSError) as exc:
            self._degraded("delete", exc)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
