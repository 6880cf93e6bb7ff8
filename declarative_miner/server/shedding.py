"""Shedding an address that floods the miner with requests it must refuse.

Every refusal of an unverified request (no valid signature, blacklisted, over a per-address bound,
no such route, a `/health` beyond the limit) costs the server a little: parsing, a look-up, perhaps
a signature check. A flood of them from one address would still take the event loop from verified
callers. So an address refused more than `limit` times a second (a rate, with bursts of `limit`) is
*shed*: its connections, open and new, are not read for a cool-down (`first` seconds, doubling each
time it is shed again within a minute, at most `MAX_SHED_FOR`), and a caller behind a trusted proxy
is refused at once. A paused connection costs nothing: its bytes wait in the kernel.

Refusals are counted in `cells` (GCRA): with one server process in its memory (no store write per
refusal, which a flood would pay for on the event loop), with several workers or machines on Redis
in the state store's cells (state/), so an address spreading its flood over them is shed at the
limit, not at a multiple of it. Which addresses are shed is each process's own (read for every
request, so never a store look-up).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import RequestError
from ..schema import MAX_SHED_FOR
FORGIVE = 60.0  # seconds after a cool-down ends before the next one starts again from `first`


class Shedding:
    """Refusals by address key, and which keys are shed until when.

    Args:
        limit: refused unverified requests per second one address may cause; 0 disables.
        first: seconds of the first cool-down.
        cells: where refusals are counted (`admit(key, interval, tolerance)`: the store's cells).
        clock: seconds, monotonic.
    """

    def __init__(self, limit: int, first: float = 1.0, cells: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.first, self._cells, self._clock = limit, first, cells, clock
        self._until: dict[str, float] = {}  # shed key -> end of its cool-down
        self._cooldown: dict[str, tuple[float, float]] = {}  # key -> (last cool-down, when it ended)
        self._swept = clock()

    def refused(self, key: str) -> None:
        """Count one refusal of an unverified request from `key`; shed it past the limit."""
        if not self.limit or self._cells is None:
            return
        now = self._clock()
        if now - self._swept >= 1.0:
            self._forget_old(now)
        try:
            over = self._cells.admit(f"refused:{key}", 1.0 / self.limit, (self.limit - 1) / self.limit) > 0
        except RequestError:  # the store cannot count now (Redis down): the refusal itself still stands
            return
        if over and self.shed_for(key) == 0.0:
            last, ended = self._cooldown.get(key, (0.0, 0.0))
            cooldown = min(MAX_SHED_FOR, last * 2) if last and now - ended < FORGIVE else self.first
            self._until[key] = now + cooldown
            self._cooldown[key] = (cooldown, now + cooldown)

    def shed_for(self, key: str) -> float:
        """Seconds `key` stays shed (0.0: it is not)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        remaining = until - self._clock()
        if remaining <= 0:
            del self._until[key]
            return 0.0
        return remaining

    @property
    def tracked(self) -> int:
        """Keys remembered (shed within the last minute): bounded by the flood's addresses."""
        return len(self._cooldown.keys() | self._until.keys())

    def _forget_old(self, now: float) -> None:
        # Cool-downs over, and those that ended over `FORGIVE` ago, no longer count: memory stays bounded.
        self._until = {key: until for key, until in self._until.items() if until > now}
        self._cooldown = {key: c for key, c in self._cooldown.items() if now - c[1] < FORGIVE}
        self._swept = now
