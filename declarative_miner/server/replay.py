"""Replay protection shared by every server process on a machine (diskcache on disk).

One process keeps these stores in memory; several (`axon.workers`) must share them, or a request
replayed to another worker would be accepted.
"""

from __future__ import annotations

from typing import Optional

import diskcache


def _open(directory: str) -> diskcache.Cache:
    # No fsync: a nonce lost to a power cut is older than any freshness window by the time the
    # machine is back.
    return diskcache.Cache(directory, sqlite_synchronous=0)


class DiskNonceStore:
    """btauth/1's `NonceStore`: each (hotkey, nonce) accepted once, across processes."""

    def __init__(self, directory: str, retention: float):
        self.retention = retention  # read by http_auth.verify to check it covers the window
        self._store = _open(directory)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return self._store.add(f"{hotkey_ss58}:{nonce_ns}", None, expire=self.retention)

    def close(self) -> None:
        self._store.close()


class DiskLedger:
    """The v10 nonce ledger (last nonce per hotkey:uuid, monotonic), across processes."""

    def __init__(self, directory: str, retention: float):
        self.retention = retention
        self._store = _open(directory)

    def last(self, key: str) -> Optional[int]:
        return self._store.get(key)

    def accept(self, key: str, nonce: int) -> bool:
        with self._store.transact():  # an exclusive lock: compare-and-set across processes
            previous = self._store.get(key)
            if previous is not None and nonce <= previous:
                return False
            self._store.set(key, nonce, expire=self.retention)
            return True

    def close(self) -> None:
        self._store.close()
