"""Where rate-limit state lives: this process, the workers of one machine, or several machines.

The rate limit is GCRA (the generic cell rate algorithm, a token bucket kept as one number per
caller: its "theoretical arrival time"), so each store needs one small atomic step, `admit`:
a dict under a lock, a shared table's entry under its lock, or a Redis script.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Optional

from ..redis_link import RedisLink
from ..server.replay import shared_state
from ..shared_table import SharedTable, digest


def _step(tat: Optional[float], now: float, interval: float, tolerance: float) -> tuple[float, Optional[float]]:
    """GCRA: (seconds to wait, 0 when admitted; the new arrival time to store, None when refused)."""
    tat = now if tat is None or tat < now else tat
    if tat - now > tolerance:
        return tat - tolerance - now, None
    return 0.0, tat + interval


class MemoryCells:
    """One process's callers, at most `max_callers`, least recently seen first out. O(1)."""

    def __init__(self, max_callers: int):
        self.max_callers = max_callers
        self._tat: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        now = time.monotonic()
        with self._lock:
            old = self._tat.pop(key, None)
            wait, tat = _step(old, now, interval, tolerance)
            self._tat[key] = tat if tat is not None else old  # a refusal changes nothing
            if len(self._tat) > self.max_callers:
                self._tat.popitem(last=False)  # a forgotten caller starts again with a full budget
        return wait

    def __len__(self) -> int:
        return len(self._tat)


class SharedCells:
    """Shared by the workers of one machine: a table in memory made before they fork. O(1).
    When `max_callers` are held, the caller nearest a full budget again is forgotten first."""

    def __init__(self, max_callers: int):
        self._table = SharedTable(max_callers)

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        now = time.time()  # one clock for every process; the table keeps each caller's arrival time
        return self._table.update(digest(key), now, lambda tat: _step(tat, now, interval, tolerance))

    def __len__(self) -> int:
        return sum(1 for _ in self._table.entries(time.time()))

    def close(self) -> None:
        pass  # the table goes with the process: workers may still be using it


# Redis's own clock, so machines with skewed clocks share one schedule.
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
    """Shared by several machines behind one hotkey. Unreachable Redis fails closed (503)."""

    def __init__(self, url: str):
        self._redis = RedisLink(url, "the rate-limit store")
        self._gcra = self._redis.client.register_script(_GCRA)

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        return float(self._redis.call(self._gcra, keys=[f"dm:rate:{key}"], args=[interval, tolerance]))

    def close(self) -> None:
        self._redis.close()


def open_cells(setting: str, workers: int, max_callers: int):
    """The store several processes share, as `axon.replay_store` implies (see `replay.shared_state`):
    Redis, a table the workers share, or None for one process (each rate limit keeps its own
    `MemoryCells`)."""
    if shared_state(setting) == "redis":
        return RedisCells(setting)
    return SharedCells(max_callers) if workers > 1 else None
