"""State on this machine's disk: SQLite through diskcache, shared by the machine's processes.

Each write is one SQLite transaction. A process killed in the middle of one loses only that write:
SQLite rolls it back, and its lock is the kernel's, released with the process, so the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import diskcache

from ..errors import Unavailable
from ..files import private_dir
from ..processes import alive
from .gcra import step
from .memory import MemoryPrompts
from .prompts import ANSWERED, COMPUTING, NEW


log = logging.getLogger(__name__)

MEMORY_FALLBACK = 100_000  # answers a process keeps in memory while its disk fails
BUSY_TIMEOUT = 2.0  # seconds a write waits for another process's transaction before the request gets 503


def _cache(directory: Path, **settings) -> diskcache.Cache:
    """The diskcache in `directory`; a damaged one is moved aside (kept for inspection) and started afresh."""
    private_dir(directory)
    # No fsync by default: a process killed (even kill -9) loses nothing written; only a crash of the
    # machine could, and by then every nonce is stale and every claim has lapsed.
    # cull_limit 0: no request pays for culling expired entries; `cull` does it, in the background.
    settings = {"sqlite_synchronous": 0, "timeout": BUSY_TIMEOUT, "cull_limit": 0, **settings}
    try:
        return diskcache.Cache(str(directory), **settings)
    except sqlite3.DatabaseError as exc:
        aside = directory.with_name(f"{directory.name}.damaged-{int(time.time())}")
        directory.rename(aside)
        log.error("the store in %s cannot be opened (%s): moved it to %s and started afresh", directory, exc, aside)
        private_dir(directory)
        return diskcache.Cache(str(directory), **settings)


_DISK_FAULTS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)


def disk_fault(exc: BaseException) -> bool:
    """Whether `exc` says the disk is full, read-only or failing (rather than the store busy)."""
    return isinstance(exc, OSError) or getattr(exc, "sqlite_errorcode", None) in _DISK_FAULTS


@contextlib.contextmanager
def _answering(what: str) -> Iterator[None]:
    """A store that cannot answer (busy past BUSY_TIMEOUT: a process stopped mid-transaction; a disk
    full or read-only) is a 503 with the reason, never a hang and never a pass."""
    try:
        yield
    except (diskcache.Timeout, sqlite3.Error, OSError) as exc:
        raise Unavailable(f"{what} on disk cannot answer ({exc}); try again", headers={"retry-after": "1"}) from None


class DiskNonces:
    """Accepted (signer, nonce) pairs, kept `retention` seconds."""

    fence_ns = 0  # the store outlives every process: nothing accepted is ever forgotten early

    def __init__(self, directory: Path, retention: float):
        self.directory, self.retention = directory, retention
        self._cache: Optional[diskcache.Cache] = None

    def open(self) -> None:
        self._cache = _cache(self.directory)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        with _answering("the replay store"):
            return self._cache.add(f"{hotkey_ss58}:{nonce_ns}", None, expire=self.retention)

    def cull(self) -> None:
        self._cache.expire()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


class DiskPrompts:
    """Answers in `directory` (at most `size_limit` bytes, the oldest out first) and claims beside
    them in `claims/`, never evicted. A claim names its process: one whose process is gone is void
    at once, and a claim lapses after `lease` seconds whatever happens.

    A disk that fills up, turns read-only or cannot be opened costs the cache its disk, not the
    service: this process goes on with its claims and answers in memory (logged loudly), and back to
    disk when a write works again.
    """

    def __init__(self, directory: Path, lease: float, size_limit: int, sync_writes: bool):
        self.directory, self.lease = directory, lease
        self._settings = {"size_limit": size_limit, "sqlite_synchronous": 2 if sync_writes else 0,
                          "eviction_policy": "least-recently-stored"}
        self._answers: Optional[diskcache.Cache] = None
        self._claims: Optional[diskcache.Cache] = None
        self._memory = MemoryPrompts(MEMORY_FALLBACK)
        self._failing = False

    @property
    def where(self) -> str:
        return str(self.directory)

    def open(self) -> None:
        try:
            self._answers = _cache(self.directory, **self._settings)
            self._claims = _cache(self.directory / "claims", eviction_policy="none")
        except (OSError, sqlite3.Error) as exc:
            self._answers = self._claims = None
            log.error("the prompt cache in %s cannot be opened (%s): SERVING WITHOUT SAVING IT, so a restart "
                      "forgets recent prompts; duplicates are caught in this process's memory", self.directory, exc)

    def _disk(self, operation: Callable[[], Any], fallback: Callable[[], Any]) -> Any:
        if self._answers is None:
            return fallback()
        try:
            with _answering("the prompt cache"):
                result = operation()
        except Unavailable as exc:
            if not disk_fault(exc.__context__):
                raise  # busy: the request is refused, not let through unchecked
            if not self._failing:
                log.warning("prompt cache write failed, serving without it (%s): claims and answers stay in "
                            "memory until the disk takes writes again", exc.__context__)
            self._failing = True
            return fallback()
        if self._failing:
            log.warning("the prompt cache in %s takes writes again", self.directory)
            self._failing = False
        return result

    def claim(self, key: str) -> str:
        if (kept := self._memory.claim(key)) != NEW:  # what memory held while the disk failed
            return kept
        state = self._disk(lambda: self._claim(key), lambda: NEW)
        if state != NEW:
            self._memory.release(key)
        return state

    def _claim(self, key: str) -> str:
        mine = os.getpid()
        while True:
            if self._claims.add(key, mine, expire=self.lease):
                if self._answers.get(key) is not None:  # answered while we looked: not ours after all
                    self._claims.delete(key)
                    return ANSWERED
                return NEW
            owner = self._claims.get(key)
            if owner is None:
                continue  # it lapsed between the two looks
            if owner != mine and not alive(owner):  # read outside any transaction
                self._drop_claim(key, owner)
                continue
            return COMPUTING

    def _drop_claim(self, key: str, owner: int) -> None:
        with self._claims.transact():
            if self._claims.get(key) == owner:
                self._claims.delete(key)

    # Settling and releasing drop the claim unchecked: it is still this process's, since a request
    # ends (its deadline) before its claim's lease does.

    def settle(self, key: str, completion: str, ttl: float) -> None:
        def on_disk() -> None:
            self._answers.set(key, completion, expire=ttl)  # first: a claim gone means an answer there
            self._claims.delete(key)
            self._memory.release(key)

        self._disk(on_disk, lambda: self._memory.settle(key, completion, ttl))

    def release(self, key: str) -> None:
        self._memory.release(key)
        self._disk(lambda: self._claims.delete(key), lambda: None)

    def read(self, key: str) -> Optional[str]:
        if (kept := self._memory.read(key)) is not None:
            return kept
        found = self._disk(lambda: self._answers.get(key), lambda: None)
        return found if isinstance(found, str) else None

    def cull(self) -> None:
        """Drop expired answers and lapsed claims, then the oldest answers beyond `size_limit`."""
        self._disk(lambda: (self._claims.expire(), self._answers.cull()), lambda: None)

    def clear(self) -> int:
        return self._memory.clear() + self._disk(lambda: self._answers.clear() + self._claims.clear(), lambda: 0)

    def close(self) -> None:
        for cache in (self._answers, self._claims):
            if cache is not None:
                cache.close()


class DiskCells:
    """GCRA cells shared by the machine's processes, one SQLite transaction an event."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._cache: Optional[diskcache.Cache] = None

    def open(self) -> None:
        self._cache = _cache(self.directory)

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        with _answering("the rate-limit store"), self._cache.transact():
            now = time.time()  # one clock for every process
            wait, tat = step(self._cache.get(key), now, interval, tolerance)
            if tat is not None:
                self._cache.set(key, tat, expire=tat - now + tolerance + 1)
        return wait

    def __len__(self) -> int:
        return len(self._cache)

    def cull(self) -> None:
        self._cache.expire()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
