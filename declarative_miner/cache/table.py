"""Which prompts were asked recently, in memory every worker process of the machine shares.

A fixed-size hash table in an anonymous shared mapping, made before the workers fork, so a
duplicate check is a few microseconds of memory access under one lock: no file, no SQLite.
Each entry names the process that claimed it; a claim whose process is gone is void.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
from typing import Iterator, Optional

from ..processes import alive

# One entry: 16 bytes of the key's digest, when it expires (wall clock, so restored entries
# keep their time), the claiming process (0 once answered), and its state.
ENTRY = struct.Struct("<16sdii")
SLOTS = 8  # entries per bucket: a bucket is one 256-byte read
EMPTY, PENDING, DONE = 0, 1, 2

_EMPTY_ENTRY = bytes(ENTRY.size)

NEW = "new"  # the caller now owns the prompt
ANSWERED = "answered"  # answered within the ttl
COMPUTING = "computing"  # being answered now, by a live process (this one included)


class ClaimTable:
    """Recent prompts by key, with an owner for each one being answered.

    Args:
        capacity: entries held at once (rounded up to whole buckets). When a bucket is full, the
            answered entry closest to expiry makes room (counted in `evicted`).
    """

    def __init__(self, capacity: int):
        self.buckets = max(1, -(-capacity // SLOTS))
        self._bucket_bytes = ENTRY.size * SLOTS
        self._memory = mmap.mmap(-1, self.buckets * self._bucket_bytes)  # MAP_SHARED: forks see one table
        self._lock = multiprocessing.Lock()
        self._evicted = multiprocessing.Value("q", 0, lock=False)  # written under _lock

    @property
    def evicted(self) -> int:
        """Entries dropped early because their bucket was full (size `cache.max_entries` above this)."""
        return self._evicted.value

    def claim(self, key: str, now: float, expires: float) -> str:
        """Claim `key` for this process unless it is answered or being answered: NEW, ANSWERED or COMPUTING.

        A claim left by a process that is gone is taken over (NEW).
        """
        digest = bytes.fromhex(key[:32])
        with self._lock:
            offset, slot, state, owner = self._find(digest, now)
            if state == DONE:
                return ANSWERED
            if state == PENDING and (owner == os.getpid() or alive(owner)):
                return COMPUTING
            self._write(offset, slot, digest, expires, os.getpid(), PENDING)
            return NEW

    def settle(self, key: str, expires: float) -> None:
        """Mark `key` answered until `expires`."""
        digest = bytes.fromhex(key[:32])
        with self._lock:
            offset, slot, _, _ = self._find(digest, 0.0)
            self._write(offset, slot, digest, expires, 0, DONE)

    def release(self, key: str) -> None:
        """Forget `key` (its prompt failed: asking again is no duplicate)."""
        digest = bytes.fromhex(key[:32])
        with self._lock:
            offset, slot, state, _ = self._find(digest, 0.0)
            if state != EMPTY:
                self._write(offset, slot, bytes(16), 0.0, 0, EMPTY)

    def _find(self, digest: bytes, now: float) -> tuple[int, int, int, int]:
        """(bucket offset, slot, state, owner) of `digest`, or of the slot it would take."""
        offset = int.from_bytes(digest[:8], "little") % self.buckets * self._bucket_bytes
        bucket = self._memory[offset:offset + self._bucket_bytes]
        # bytes.find does in C what a loop over the slots would do in Python: this runs twice a request.
        for at in _aligned(bucket, digest):
            _, expires, owner, state = ENTRY.unpack_from(bucket, at)
            if state != EMPTY:
                slot = at // ENTRY.size
                return (offset, slot, state, owner) if expires > now else (offset, slot, EMPTY, 0)
        for at in _aligned(bucket, _EMPTY_ENTRY):  # an empty slot is all zeros
            return offset, at // ENTRY.size, EMPTY, 0
        free: Optional[int] = None
        victim, victim_expires = 0, float("inf")
        for slot, (_, expires, _, state) in enumerate(ENTRY.iter_unpack(bucket)):
            if expires <= now:
                free = slot
                break
            if state == DONE and expires < victim_expires:
                victim, victim_expires = slot, expires
        if free is None:
            self._evicted.value += 1
            free = victim
        return offset, free, EMPTY, 0

    def _write(self, offset: int, slot: int, digest: bytes, expires: float, owner: int, state: int) -> None:
        ENTRY.pack_into(self._memory, offset + slot * ENTRY.size, digest, expires, owner, state)

    def close(self) -> None:
        self._memory.close()


def _aligned(bucket: bytes, needle: bytes) -> Iterator[int]:
    """Where `needle` starts an entry of `bucket`."""
    at = bucket.find(needle)
    while at != -1:
        if at % ENTRY.size == 0:
            yield at
        at = bucket.find(needle, at + 1)
