"""Per-hotkey rate limits: a token bucket per caller, answered 429 with Retry-After."""

from __future__ import annotations

import math
import threading
import time

from ..chain.metagraph import Metagraph
from ..errors import RateLimited
from ..protocol import Prompting
from .blacklist import Decision


class RateLimit:
    """At most `requests` per `window` seconds per hotkey, with bursts up to `requests`.

    The rule only *looks* at the budget before the body is read; a token is spent by `count`
    once the request's signature has verified.
    """

    def __init__(self, requests: int, window: float = 60.0, max_callers: int = 100_000):
        if requests < 1 or window <= 0:
            raise ValueError("requests must be at least 1 and window > 0 seconds")
        self.capacity, self.rate = float(requests), requests / window
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # hotkey -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, hotkey: str, now: float) -> float:
        tokens, at = self._buckets.get(hotkey, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        tokens = self._tokens(request.dendrite.hotkey, time.monotonic())
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited(f"more than {self.capacity:g} requests in {self.capacity / self.rate:g} s; "
                              f"retry in {wait} s", headers={"retry-after": str(wait)})
        return None

    def count(self, request: Prompting) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.max_callers:
                # Forget callers whose buckets have refilled: they are indistinguishable from new.
                self._buckets = {k: v for k, v in self._buckets.items() if self._tokens(k, now) < self.capacity}
            self._buckets[request.dendrite.hotkey] = (self._tokens(request.dendrite.hotkey, now) - 1.0, now)
