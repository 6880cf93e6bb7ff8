"""Answered prompts on disk (diskcache), written behind the requests that answered them.

A served request only queues its entry; a thread writes the queue every `SAVE_INTERVAL` seconds
in two transactions (the completions, then the batch naming them). So a `kill -9` loses at most the
prompts answered in that last interval (a clean stop writes everything), and the next start
restores the rest.

Each batch's keys and expiries are one entry (24 bytes a prompt) in a cache of their own, in
`batches/`: one diskcache `set` costs more CPU than a request's whole signature check, so a request
must not pay one, and a restart reads the few batches alone. A completion (`reuse`) is an entry
under its own key in the main cache, which a hit reads; a restart never walks those (diskcache's
key iteration slows with the square of the entries: over 10^6 completions it had not finished in
17 minutes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import diskcache

from .table import key_digest

log = logging.getLogger(__name__)

SAVE_INTERVAL = 0.5  # seconds between writes of the queue: what a kill -9 may lose
_ANSWERED = struct.Struct("<16sd")  # a batched key's digest (all the claim table keeps: key_digest) and its expiry


_Stores = tuple[Optional[diskcache.Cache], Optional[diskcache.Cache]]


def _open(directory: str, size_limit: int, sync_writes: bool) -> _Stores:
    """(completions, batches) in `directory`, or (None, None) when it cannot be had."""
    # cull_limit=0: expiry and size culling run in `cull()`, in the background. sqlite_synchronous=0
    # skips fsync: a crashed process (even kill -9) loses nothing written, only an OS crash could.
    synchronous = 2 if sync_writes else 0

    def both() -> _Stores:
        return (diskcache.Cache(directory, size_limit=size_limit, cull_limit=0, sqlite_synchronous=synchronous),
                diskcache.Cache(str(Path(directory) / "batches"), cull_limit=0, sqlite_synchronous=synchronous))
    try:
        return both()
    except sqlite3.DatabaseError as exc:
        first = exc
    try:  # a damaged cache: keep it for inspection, start afresh
        aside = Path(directory).with_name(f"{Path(directory).name}.damaged-{int(time.time())}")
        Path(directory).rename(aside)
        log.error("the prompt cache in %s cannot be opened (%s): moved it to %s and started afresh",
                  directory, first, aside)
        return both()
    except (OSError, sqlite3.Error) as exc:
        log.error("the prompt cache in %s cannot be opened or replaced (%s; %s): SERVING WITHOUT SAVING IT, "
                  "so a restart forgets recent prompts", directory, first, exc)
        return None, None


class SavedPrompts:
    """The prompt cache's disk copy: `restore` at start, `save` (queued) while serving, `read` on a hit.

    A disk that cannot be read or written (full, read-only) is logged and skipped: serving goes on.
    """

    def __init__(self, directory: str, size_limit: int, sync_writes: bool):
        self._store, self._batches = _open(directory, size_limit, sync_writes)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._counting = threading.Lock()
        self.unsaved = 0  # entries answered and not yet on disk: what a kill -9 now would lose

    def entries(self) -> Iterator[tuple[str, float]]:
        """(key, expires) of every prompt still fresh on disk (each key's first 32 hex digits)."""
        if self._store is None:
            return
        now = time.time()
        for key in self._safely("restore", lambda: list(self._batches.iterkeys())) or ():
            found = self._safely("restore", self._batches.get, key, expire_time=True)
            if not found or found[1] is None or found[1] <= now:
                continue
            for digest, expires in _ANSWERED.iter_unpack(found[0] if isinstance(found[0], bytes) else b""):
                if expires > now:
                    yield digest.hex(), expires

    def clear(self) -> int:
        """Drop every saved prompt; returns how many."""
        if self._store is None:
            return 0
        prompts = sum(1 for _ in self.entries())
        self._safely("clear", self._batches.clear)
        self._safely("clear", self._store.clear)
        return prompts

    def read(self, key: str) -> Optional[str]:
        """The saved completion of `key` (blocking: call it off the event loop)."""
        if self._store is None:
            return None
        found = self._safely("look-up", self._store.get, key)
        return found if isinstance(found, str) else None

    def save(self, key: str, completion: Optional[str], expires: float,
             then: Callable[[bool], None] = lambda saved: None) -> None:
        """Queue `key` (with its `completion`, or None to keep only the fact) for the next write;
        `then(saved)` runs in the writer once it is written (or failed)."""
        with self._counting:
            self.unsaved += 1
        self._queue.put((key, completion, expires, then))

    def start(self) -> None:
        """Start the writer thread (in each serving process: threads do not survive a fork)."""
        if self._writer is None:
            self._stopping.clear()
            self._writer = threading.Thread(target=self._write_forever, name="prompt-cache-writer", daemon=True)
            self._writer.start()

    def stop(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is not None:
            self._stopping.set()
            self._writer.join()
            self._writer = None

    def _write_forever(self) -> None:
        # Wakes once an interval, never per request: a request's only cost is the queue put.
        while not self._stopping.wait(SAVE_INTERVAL):
            self._write(self._drain())
        self._write(self._drain())

    def _drain(self) -> list:
        batch = []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        return batch

    def _write(self, batch: list) -> None:
        if not batch:
            return
        now = time.time()

        answered = [(key, expires) for key, _, expires, _ in batch]

        def write_all() -> bool:
            with self._store.transact():
                for key, completion, expires, _ in batch:
                    if completion is not None:
                        self._store.set(key, completion, expire=max(expires - now, 0.001))
            # Second, so a batch on disk never names a completion that is not (a kill -9 between the
            # two loses the batch: those prompts may be answered once more after the restart).
            blob = b"".join(_ANSWERED.pack(key_digest(key), expires) for key, expires in answered)
            last = max(expires for _, expires in answered)
            self._batches.set(f"{os.getpid()}:{time.time_ns()}", blob, expire=max(last - now, 0.001))
            return True

        saved = self._store is not None and bool(self._safely("write", write_all))
        for *_, then in batch:
            then(saved)
        with self._counting:
            self.unsaved -= len(batch)

    def cull(self) -> int:
        """Drop expired entries, then the oldest beyond `size_limit`; returns how many went."""
        if self._store is None:
            return 0
        self._safely("cull", self._batches.cull)
        return self._safely("cull", self._store.cull) or 0

    def _safely(self, what: str, operation: Callable, *args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            log.warning("prompt cache %s failed, serving without it: %s", what, exc)
            return None

    def close(self) -> None:
        self.stop()
        if self._store is not None:
            self._store.close()
            self._batches.close()
