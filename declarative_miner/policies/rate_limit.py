"""Per-hotkey rate limits, answered 429 with Retry-After."""

from __future__ import annotations

import math

from ..chain.metagraph import Metagraph
from ..errors import RateLimited
from ..prompting import Prompting
from .blacklist import Decision
from ..state.memory import MemoryCells


class RateLimit:
    """At most `requests` per `window` seconds per hotkey, with bursts up to `requests` (GCRA,
    the token bucket kept as one number per caller).

    The budget is looked at and spent only once the request's signature has verified (`count`):
    an unsigned claim of a validator's hotkey can neither spend its budget nor learn, from a 429
    instead of a 401, that it is spent. The state lives in this process (at most `max_callers`,
    least recently seen first out; O(1) per request) unless the miner `share`s a store that its
    workers or machines use together, so a caller's budget is one budget however many serve it.
    """

    def __init__(self, requests: int, window: float = 60.0, max_callers: int = 100_000):
        if requests < 1 or window <= 0:
            raise ValueError("requests must be at least 1 and window > 0 seconds")
        self.requests, self.window = requests, float(window)
        self.interval = self.window / requests  # seconds one request uses of the budget
        self.tolerance = (requests - 1) * self.interval  # how far ahead of the rate a burst may run
        self.cells = MemoryCells(max_callers)

    def share(self, cells) -> None:
        """Keep the budgets in `cells` (policies/cells.py), shared with other processes."""
        self.cells = cells

    def __len__(self) -> int:
        """How many callers this process remembers (at most `max_callers`)."""
        return len(self.cells)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        return None  # decides nothing on an unverified claim: see `count`

    def count(self, request: Prompting) -> None:
        """Spend one request of the verified caller's budget, or raise `RateLimited`."""
        wait = self.cells.admit(request.dendrite.hotkey, self.interval, self.tolerance)
        if wait > 0:
            retry = math.ceil(wait)
            raise RateLimited(f"more than {self.requests} requests in {self.window:g} s; retry in {retry} s",
                              headers={"retry-after": str(retry)})
