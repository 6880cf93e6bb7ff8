"""Where the prompt cache keeps its entries: this machine (shared memory, saved to disk behind the
requests) or Redis (several machines behind one hotkey). Both answer the same five questions."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Optional

from ..redis_link import RedisLink
from ..server.replay import shared_state
from .saved import SavedPrompts
from .table import ANSWERED, COMPUTING, NEW, ClaimTable

__all__ = ["ANSWERED", "COMPUTING", "NEW", "LocalStore", "RedisStore", "open_store"]

log = logging.getLogger(__name__)


class LocalStore:
    """Claims in a table shared by the machine's worker processes; answers saved to disk.

    Under `reuse` an entry counts as answered for other processes once its completion is on disk
    (they read it there); until then it stays claimed by the process that answered it.
    """

    def __init__(self, capacity: int, directory: str, size_limit: int, sync_writes: bool):
        self.table = ClaimTable(capacity)
        self.where = directory  # what the miner's summary names
        self._disk = (directory, size_limit, sync_writes)
        self.saved: Optional[SavedPrompts] = None
        self._owner: Optional[int] = None  # a file descriptor holding the directory's lock

    def open(self, clear: bool) -> tuple[int, int]:
        """Open the disk copy and restore its fresh entries (before workers fork); returns
        (restored, cleared)."""
        if self.saved is not None:
            return 0, 0
        self.saved = SavedPrompts(*self._disk)
        if self._owner is not None:
            return 0, 0  # a worker reopening after the fork: the parent restored the table
        self._own(Path(self.where) / "owner.lock")
        cleared = self.saved.clear() if clear else 0
        restored = 0
        for key, expires in self.saved.entries():
            self.table.settle(key, expires)
            restored += 1
        return restored, cleared

    def _own(self, path: Path) -> None:
        """Hold the directory's lock while serving; name another miner that holds it, since the
        duplicate check is shared only by this miner's own workers."""
        try:
            self._owner = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._owner, 32, 0).decode(errors="replace").strip() or "?"
            log.warning("another miner (pid %s) uses the prompt cache in %s: a prompt asked of both is a duplicate "
                        "only after a restart. Serve one hotkey from one miner with axon.workers=N (or share "
                        "axon.replay_store=redis://...), or give each miner its own cache.directory",
                        other, self.where)
            return
        except OSError:
            return  # an unwritable directory: SavedPrompts has said so
        os.ftruncate(self._owner, 0)
        os.pwrite(self._owner, str(os.getpid()).encode(), 0)

    def claim(self, key: str, now: float, expires: float) -> str:
        return self.table.claim(key, now, expires)

    def answered(self, key: str, completion: Optional[str], expires: float) -> None:
        """Record an answer; `completion` None keeps only the fact (under `reject`)."""
        if completion is None:
            self.table.settle(key, expires)
            self.saved.save(key, None, expires)
            return

        def shared(saved: bool) -> None:  # others may read it now, or (disk failing) compute it themselves
            if saved:
                self.table.settle(key, expires)
            else:
                self.table.release(key)

        self.saved.save(key, completion, expires, then=shared)

    def release(self, key: str) -> None:
        self.table.release(key)

    def read(self, key: str) -> Optional[str]:
        return self.saved.read(key) if self.saved is not None else None

    @property
    def unsaved(self) -> int:
        return self.saved.unsaved if self.saved is not None else 0

    def start(self) -> None:
        self.saved.start()

    def stop(self) -> None:
        self.saved.stop()

    def cull(self) -> int:
        return self.saved.cull() if self.saved is not None else 0

    def close(self) -> None:
        """Close the disk copy (before a fork too: each process opens its own connection)."""
        if self.saved is not None:
            self.saved.close()
            self.saved = None

    def release_memory(self) -> None:
        self.table.close()
        if self._owner is not None:
            os.close(self._owner)  # the lock goes with it
            self._owner = None


_PENDING = b"\x00pending"  # a claim's value: no completion starts with NUL


class RedisStore:
    """Claims and answers in Redis. A claim is leased for `lease` seconds (the longest a prompt may
    run), so the claims of a machine that died lapse then. Unreachable Redis is a 503."""

    unsaved = 0  # nothing waits for a disk
    where = "Redis"

    def __init__(self, url: str, lease: float):
        self._redis = RedisLink(url, "the prompt cache's Redis")
        self._lease_ms = int(lease * 1000) + 1

    def open(self, clear: bool) -> tuple[int, int]:
        redis, cleared = self._redis.client, 0
        if clear:
            keys = list(self._redis.call(redis.scan_iter, match="dm:cache:*", count=1000))
            cleared = self._redis.call(redis.delete, *keys) if keys else 0
        return 0, cleared

    def claim(self, key: str, now: float, expires: float) -> str:
        redis = self._redis.client
        if self._redis.call(redis.set, f"dm:cache:{key}", _PENDING, nx=True, px=self._lease_ms):
            return NEW
        return COMPUTING if self._redis.call(redis.get, f"dm:cache:{key}") == _PENDING else ANSWERED

    def answered(self, key: str, completion: Optional[str], expires: float) -> None:
        ttl_ms = max(1, int((expires - time.time()) * 1000))
        self._redis.call(self._redis.client.set, f"dm:cache:{key}", (completion or "").encode(), px=ttl_ms)

    def release(self, key: str) -> None:
        self._redis.call(self._redis.client.delete, f"dm:cache:{key}")

    def read(self, key: str) -> Optional[str]:
        found = self._redis.call(self._redis.client.get, f"dm:cache:{key}")
        return None if found is None or found == _PENDING else found.decode()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def cull(self) -> int:
        return 0  # Redis expires its own keys

    def close(self) -> None:
        pass

    def release_memory(self) -> None:
        self._redis.close()


def open_store(replay_store: str, *, capacity: int, directory: str, size_limit: int,
               sync_writes: bool, lease: float):
    """The store `axon.replay_store` implies: Redis when it names one (the machines behind one
    hotkey share the cache as they share nonces), else this machine's."""
    if shared_state(replay_store) == "redis":
        return RedisStore(replay_store, lease)
    return LocalStore(capacity, directory, size_limit, sync_writes)
