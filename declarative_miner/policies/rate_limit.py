"""Per-hotkey rate limits: a token bucket per caller, answered 429 with Retry-After."""

from __future__ import annotations

import collections
import math
import threading
import time

from ..chain.metagraph import Metagraph
from ..errors import RateLimited
from ..protocol import Prompting
from .blacklist import Decision


class RateLimit:
    """At most `requests` per `window` seconds per hotkey, with bursts up to `requests`.

    The budget is looked at and spent only once the request's signature has verified (`count`):
    an unsigned claim of a validator's hotkey can neither spend its budget nor learn, from a 429
    instead of a 401, that it is spent. At most `max_callers` buckets are kept, least recently
    used first out: a forgotten caller starts again with a full bucket. O(1) per request.
    """

    def __init__(self, requests: int, window: float = 60.0, max_callers: int = 100_000):
        if requests < 1 or window <= 0:
            raise ValueError("requests must be at least 1 and window > 0 seconds")
        self.capacity, self.rate = float(requests), requests / window
        self.max_callers = max_callers
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many callers are remembered (at most `max_callers`)."""
        return len(self._buckets)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        return None  # decides nothing on an unverified claim: see `count`

    def count(self, request: Prompting) -> None:
        """Spend one token of the verified caller's budget, or raise `RateLimited`."""
        hotkey, now = request.dendrite.hotkey, time.monotonic()
        with self._lock:
            tokens, at = self._buckets.pop(hotkey, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[hotkey] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        if not allowed:
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited(f"more than {self.capacity:g} requests in {self.capacity / self.rate:g} s; "
                              f"retry in {wait} s", headers={"retry-after": str(wait)})
