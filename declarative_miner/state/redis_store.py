"""State in Redis, shared by several machines behind one hotkey. Unreachable Redis fails closed: 503."""

from __future__ import annotations

import os
import socket
from typing import Optional

from .prompts import ANSWERED, COMPUTING, NEW
from .redis_link import RedisLink


class RedisNonces:
    """`SET NX EX` per accepted (signer, nonce)."""

    fence_ns = 0

    def __init__(self, url: str, retention: float):
        self.url, self.retention = url, retention
        self._redis: Optional[RedisLink] = None

    def open(self) -> None:
        self._redis = RedisLink(self.url, "the replay store")

    def ping(self) -> None:
        self._redis.call(self._redis.client.ping)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return bool(self._redis.call(self._redis.client.set, f"dm:nonce:{hotkey_ss58}:{nonce_ns}", 1, nx=True,
                                     ex=int(self.retention) + 1))

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


class RedisPrompts:
    """Answers under `dm:cache:`, claims under `dm:claim:` leased for `lease` seconds (the longest a
    prompt may run): a machine that dies holds its claims no longer than that."""

    where = "Redis"

    def __init__(self, url: str, lease: float):
        self.url, self._lease_ms = url, int(lease * 1000) + 1
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._redis: Optional[RedisLink] = None

    def open(self) -> None:
        self._redis = RedisLink(self.url, "the prompt cache's Redis")
        self._owner = f"{socket.gethostname()}:{os.getpid()}"  # this process, after a fork too

    def claim(self, key: str) -> str:
        redis = self._redis
        if not redis.call(redis.client.set, f"dm:claim:{key}", self._owner, nx=True, px=self._lease_ms):
            return COMPUTING
        if redis.call(redis.client.exists, f"dm:cache:{key}"):
            redis.call(redis.client.delete, f"dm:claim:{key}")
            return ANSWERED
        return NEW

    def settle(self, key: str, completion: str, ttl: float) -> None:
        redis = self._redis
        redis.call(redis.client.set, f"dm:cache:{key}", completion.encode(), px=max(1, int(ttl * 1000)))
        redis.call(redis.client.delete, f"dm:claim:{key}")

    def release(self, key: str) -> None:
        self._redis.call(self._redis.client.delete, f"dm:claim:{key}")

    def read(self, key: str) -> Optional[str]:
        found = self._redis.call(self._redis.client.get, f"dm:cache:{key}")
        return None if found is None else found.decode()

    def clear(self) -> int:
        redis = self._redis
        keys = list(redis.call(redis.client.scan_iter, match="dm:cache:*", count=1000))
        return redis.call(redis.client.delete, *keys) if keys else 0

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


# Redis's own clock, so machines with skewed clocks share one schedule (the step of gcra.py).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
if tat - now > tolerance then return tostring(tat - tolerance - now) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((tat + interval - now) * 1000))
return '0'
"""


class RedisCells:
    """GCRA cells in Redis, one script call an event."""

    def __init__(self, url: str):
        self.url = url
        self._redis: Optional[RedisLink] = None

    def open(self) -> None:
        self._redis = RedisLink(self.url, "the rate-limit store")
        self._gcra = self._redis.client.register_script(_GCRA)

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        return float(self._redis.call(self._gcra, keys=[f"dm:rate:{key}"], args=[interval, tolerance]))

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
