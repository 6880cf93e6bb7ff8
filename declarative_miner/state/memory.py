"""State in this process's memory: one worker, nothing kept across a restart."""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Optional

from .gcra import step
from .prompts import ANSWERED, COMPUTING, NEW


class MemoryNonces:
    """Accepted (signer, nonce) pairs for `retention` seconds.

    What a previous run accepted is gone, so a start refuses every request signed before it (and
    within `allowed_skew` after it, which a caller's clock running ahead could have signed before):
    `fence_ns`. Honest requests in flight across a restart are refused with that reason, once.
    """

    def __init__(self, retention: float, allowed_skew: float):
        self.retention, self._skew = retention, allowed_skew  # retention: read by http_auth.verify
        self._expiry: dict[str, float] = {}
        self._order: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()
        self.fence_ns = 0

    def open(self) -> None:
        self.fence_ns = time.time_ns() + int(self._skew * 1e9)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """True the first time (hotkey, nonce) is seen within `retention`; False for a replay."""
        key, now = f"{hotkey_ss58}:{nonce_ns}", time.time()
        with self._lock:
            while self._order and self._order[0][0] < now:  # forget what has expired, oldest first
                expiry, old = self._order.popleft()
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            if self._expiry.get(key, 0.0) > now:
                return False
            self._expiry[key] = now + self.retention
            self._order.append((now + self.retention, key))
            return True

    def close(self) -> None:
        pass


class MemoryPrompts:
    """Claims of prompts being answered, and the last `max_entries` answers (oldest first out).
    A claim is never evicted: there are only as many as requests in flight."""

    where = "memory"

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._claimed: set[str] = set()
        self._answered: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()

    def open(self) -> None:
        pass

    def claim(self, key: str) -> str:
        if (answered := self._answered.get(key)) is not None:
            if answered[0] > time.time():
                return ANSWERED
            del self._answered[key]
        if key in self._claimed:
            return COMPUTING
        self._claimed.add(key)
        return NEW

    def settle(self, key: str, completion: str, ttl: float) -> None:
        self._claimed.discard(key)
        self._answered[key] = (time.time() + ttl, completion)
        self._answered.move_to_end(key)
        if len(self._answered) > self.max_entries:
            self._answered.popitem(last=False)

    def release(self, key: str) -> None:
        self._claimed.discard(key)

    def read(self, key: str) -> Optional[str]:
        answered = self._answered.get(key)
        return answered[1] if answered is not None and answered[0] > time.time() else None

    def clear(self) -> int:
        cleared = len(self._answered)
        self._answered.clear()
        return cleared

    def close(self) -> None:
        pass


class MemoryCells:
    """GCRA cells of at most `max_callers` keys, least recently seen first out. O(1).
    `clock`: seconds, monotonic."""

    def __init__(self, max_callers: int, clock: Callable[[], float] = time.monotonic):
        self.max_callers, self._clock = max_callers, clock
        self._tat: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def open(self) -> None:
        pass

    def admit(self, key: str, interval: float, tolerance: float) -> float:
        """Seconds to wait before `key`'s next event is admitted (0: admitted now, and counted)."""
        now = self._clock()
        with self._lock:
            old = self._tat.pop(key, None)
            wait, tat = step(old, now, interval, tolerance)
            self._tat[key] = tat if tat is not None else old  # a refusal changes nothing
            if len(self._tat) > self.max_callers:
                self._tat.popitem(last=False)  # a forgotten caller starts again with a full budget
        return wait

    def __len__(self) -> int:
        return len(self._tat)

    def close(self) -> None:
        pass
