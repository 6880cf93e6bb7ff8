"""A fixed-size hash table in memory that every worker process of the machine shares.

An anonymous shared mapping made before the workers fork, so a look-up is a few microseconds of
memory access under one lock: no file, no SQLite, no system call when the lock is free. What it
holds, by a 16-byte digest: until when an entry counts (wall clock, so a restored entry keeps its
time), the process that owns it, and its state. The prompt cache's claims, the replay store's
nonces and the rate limits' budgets are kept in it.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import struct
from typing import Callable, Iterator, Optional, TypeVar

# One entry: 16 bytes of the key's digest, when it expires, the owning process (0: none), its state.
ENTRY = struct.Struct("<16sdii")
SLOTS = 8  # entries per bucket: a bucket is one 256-byte read
EMPTY, PENDING, DONE = 0, 1, 2

_STATE = ENTRY.size - 4  # where an entry's state starts; its first byte is the whole state (little-endian)

T = TypeVar("T")


def digest(key: str) -> bytes:
    """The 16 bytes a table keeps of `key`."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


class TableFull(Exception):
    """Every entry of the key's two buckets is live and may not be dropped."""


# What `_find` says, a plain tuple (a named one costs more than the rest of a look-up): the key's
# bucket, its slot or the one it would take (None: full and nothing may go), its state (EMPTY when
# absent or expired), owner and expiry.
Found = tuple[int, Optional[int], int, int, float]


class SharedTable:
    """Entries by digest, in `capacity` slots (rounded up to whole buckets of `SLOTS`).

    A key goes in the emptier of its two buckets. When both are full, an expired entry makes room,
    else (where the caller allows it) the DONE entry closest to expiry, counted in `evicted`.
    """

    def __init__(self, capacity: int):
        self.buckets = max(1, -(-capacity // SLOTS))
        self._bucket_bytes = ENTRY.size * SLOTS
        # MAP_SHARED: forks see one table. MAP_POPULATE: every page is there from the start, so the
        # memory `capacity` costs is taken at once and a request never pays the kernel for a first
        # touch (a fresh 10^6-entry table faulted 1.5 times a request, about 5 µs each).
        self._memory = mmap.mmap(-1, self.buckets * self._bucket_bytes, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        self._lock = multiprocessing.Lock()
        self._evicted = multiprocessing.Value("q", 0, lock=False)  # written under _lock

    @property
    def evicted(self) -> int:
        """Entries dropped early because their bucket was full."""
        return self._evicted.value

    def update(self, digest: bytes, now: float, change: Callable[[Optional[float]], tuple[T, Optional[float]]],
               *, evict: bool = True) -> T:
        """Under the lock, `change(expiry of the live entry, or None)` says (what to return, the
        entry's new expiry or None to leave it); the entry is then written DONE without owner.

        Raises:
            TableFull: a new entry has no room and `evict` is False.
        """
        with self._lock:
            offset, slot, state, _, old = self._find(digest, now, evict)
            result, expires = change(old if state != EMPTY else None)
            if expires is not None:
                if slot is None:
                    raise TableFull(f"the {2 * SLOTS} entries this key may take are all live")
                self._write(offset, slot, digest, expires, 0, DONE)
            return result

    def add(self, digest: bytes, now: float, expires: float) -> bool:
        """Keep `digest` until `expires` unless it is live: whether it was new. A live entry is
        never dropped for it.

        Raises:
            TableFull: no room for it.
        """
        return self.update(digest, now, lambda seen: (False, None) if seen is not None else (True, expires),
                           evict=False)

    def entries(self, now: float) -> Iterator[tuple[bytes, float]]:
        """(digest, expiry) of every DONE entry still live (reads the whole table: for saving it)."""
        for digest, expires, _, state in ENTRY.iter_unpack(self._memory):
            if state == DONE and expires > now:
                yield digest, expires

    def _find(self, digest: bytes, now: float, evict: bool = True) -> Found:
        """Where `digest` is, or the slot it would take (call under the lock).

        A key may live in either of two buckets (two halves of its digest), and a new one goes to the
        emptier: the fullest bucket then stays near the average, so a table fills to most of its
        capacity before a bucket has no room (with one choice, 8192 entries overflowed a bucket at 27% full).
        """
        number, size, memory = int.from_bytes(digest, "little"), self._bucket_bytes, self._memory
        offsets = (number % self.buckets * size, (number >> 64) % self.buckets * size)
        for offset in offsets:  # searched in place: copying the buckets out cost more than the search
            at = _aligned(memory, digest, offset, offset + size)
            if at >= 0:
                _, expires, owner, state = ENTRY.unpack_from(memory, at)
                slot = (at - offset) // ENTRY.size
                return (offset, slot, state, owner, expires) if expires > now else (offset, slot, EMPTY, 0, 0.0)
        states = [memory[offset + _STATE:offset + size:ENTRY.size] for offset in offsets]  # a byte a slot
        emptier = 0 if states[0].count(EMPTY) >= states[1].count(EMPTY) else 1
        if EMPTY in states[emptier]:
            return (offsets[emptier], states[emptier].index(EMPTY), EMPTY, 0, 0.0)
        victim: Optional[tuple[int, int]] = None
        victim_expires = float("inf")
        for offset in offsets:
            for slot, (_, expires, _, state) in enumerate(ENTRY.iter_unpack(memory[offset:offset + size])):
                if expires <= now:
                    return (offset, slot, EMPTY, 0, 0.0)
                if state == DONE and expires < victim_expires:
                    victim, victim_expires = (offset, slot), expires
        if not evict:
            return (offsets[0], None, EMPTY, 0, 0.0)
        self._evicted.value += 1
        offset, slot = victim or (offsets[0], 0)  # only live claims being answered (rare): the first goes
        return (offset, slot, EMPTY, 0, 0.0)

    def _write(self, offset: int, slot: int, digest: bytes, expires: float, owner: int, state: int) -> None:
        ENTRY.pack_into(self._memory, offset + slot * ENTRY.size, digest, expires, owner, state)

    def close(self) -> None:
        self._memory.close()


def _aligned(memory: mmap.mmap, digest: bytes, start: int, end: int) -> int:
    """Where an entry of the bucket at `memory[start:end]` holds `digest`, or -1. (find does in C
    what a loop over the slots would do in Python; a match across two entries is possible, only
    not likely.)"""
    at = memory.find(digest, start, end)
    while at > 0 and at % ENTRY.size:
        at = memory.find(digest, at + 1, end)
    return at
