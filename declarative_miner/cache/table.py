"""Which prompts were asked recently, in the table every worker process of the machine shares.

Each entry names the process that claimed it; a claim whose process is gone is void.
"""

from __future__ import annotations

import os

from ..processes import alive
from ..shared_table import DONE, EMPTY, PENDING, SharedTable

NEW = "new"  # the caller now owns the prompt
ANSWERED = "answered"  # answered within the ttl
COMPUTING = "computing"  # being answered now, by a live process (this one included)


def key_digest(key: str) -> bytes:
    """What the table (and a saved batch) keeps of a prompt's key, a sha256 in hex: its first 16 bytes."""
    return bytes.fromhex(key[:32])


class ClaimTable(SharedTable):
    """Recent prompts by key, with an owner for each one being answered.

    Args:
        capacity: entries held at once (rounded up to whole buckets). When both of a key's buckets
            are full, the answered entry closest to expiry makes room (counted in `evicted`: size
            `cache.max_entries` above it).
    """

    def claim(self, key: str, now: float, expires: float) -> str:
        """Claim `key` for this process unless it is answered or being answered: NEW, ANSWERED or COMPUTING.

        A claim left by a process that is gone is taken over (NEW).
        """
        digest = key_digest(key)
        with self._lock:
            offset, slot, state, owner, _ = self._find(digest, now)
            if state == DONE:
                return ANSWERED
            if state == PENDING and (owner == os.getpid() or alive(owner)):
                return COMPUTING
            self._write(offset, slot, digest, expires, os.getpid(), PENDING)
            return NEW

    def settle(self, key: str, expires: float) -> None:
        """Mark `key` answered until `expires`."""
        digest = key_digest(key)
        with self._lock:
            offset, slot, _, _, _ = self._find(digest, 0.0)
            self._write(offset, slot, digest, expires, 0, DONE)

    def release(self, key: str) -> None:
        """Forget `key` (its prompt failed: asking again is no duplicate)."""
        digest = key_digest(key)
        with self._lock:
            offset, slot, state, _, _ = self._find(digest, 0.0)
            if state != EMPTY:
                self._write(offset, slot, bytes(16), 0.0, 0, EMPTY)
