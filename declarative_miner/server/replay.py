"""Replay protection shared by several server processes: on disk (diskcache) for the workers
of one machine, in Redis for several machines behind one hotkey.

One process keeps these stores in memory; several must share them, or a request replayed to
another worker would be accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import diskcache

from ..errors import Unavailable


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


# Nonces are 19-digit nanosecond counts, beyond a Lua number's exact range: compare as decimals.
_ADVANCE = """
local last = redis.call('GET', KEYS[1])
if last and (#last > #ARGV[1] or (#last == #ARGV[1] and last >= ARGV[1])) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class _Redis:
    """Stores in Redis, for several machines behind one hotkey. Unreachable Redis fails closed:
    the request gets 503, never a pass."""

    def __init__(self, url: str, retention: float):
        import redis

        self.retention, self._expire = retention, int(retention) + 1
        self._redis, self._errors = redis.Redis.from_url(url, socket_timeout=2), redis.RedisError

    def _call(self, operation, *args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except self._errors as exc:
            raise Unavailable(f"the replay store is unreachable ({type(exc).__name__}); try again") from None

    def close(self) -> None:
        self._redis.close()


class RedisNonceStore(_Redis):
    """btauth/1's `NonceStore` in Redis (SET NX EX)."""

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return bool(self._call(self._redis.set, f"dm:btauth:{hotkey_ss58}:{nonce_ns}", 1, nx=True, ex=self._expire))


class RedisLedger(_Redis):
    """The v10 nonce ledger in Redis: the compare-and-set runs atomically as a script."""

    def __init__(self, url: str, retention: float):
        super().__init__(url, retention)
        self._advance = self._redis.register_script(_ADVANCE)

    def last(self, key: str) -> Optional[int]:
        value = self._call(self._redis.get, f"dm:v10:{key}")
        return int(value) if value is not None else None

    def accept(self, key: str, nonce: int) -> bool:
        return bool(self._call(self._advance, keys=[f"dm:v10:{key}"], args=[str(nonce), self._expire]))


def open_stores(setting: str, workers: int, home: str, *, retention: float) -> list:
    """btauth/1's nonce store and the v10 ledger that `axon.replay_store` names, or [] for the
    in-memory defaults (one process, `memory`, or `auto` with a single worker)."""
    if setting == "memory" or (setting == "auto" and workers == 1):
        return []
    if setting.startswith(("redis://", "rediss://", "unix://")):
        return [RedisNonceStore(setting, retention), RedisLedger(setting, retention)]
    directory = Path(home).expanduser() / "replay"
    return [DiskNonceStore(str(directory / "btauth"), retention), DiskLedger(str(directory / "v10"), retention)]
