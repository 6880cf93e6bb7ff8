"""Shedding an address that floods the miner with requests it must refuse.

Every refusal of an unverified request (no valid signature, blacklisted, over the per-address
bound, no such route) costs the server a little: parsing, a lookup, perhaps a signature check.
A flood of them from one address would still take the event loop from verified callers. So an
address refused more than `limit` times within a second is *shed*: its connections, open and
new, are not read for a cool-down (`first` seconds, doubling each time it is shed again within a
minute, at most `MAX_COOLDOWN`). A shed connection costs nothing while paused: its bytes wait in
the kernel until the cool-down ends, and a client waiting on it sends nothing more. (uvicorn closes
a connection paused past its keep-alive timeout, 5 s.)

With `axon.workers` > 1 the refusals are counted in a table the workers share, so an address
spreading its flood over N workers is shed at the limit, not at N times it. Each worker keeps its
own list of shed addresses (read for every request, so never a shared look-up): a worker learns
that an address is over the limit at the next refusal it makes itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

WINDOW = 1.0  # seconds over which refusals are counted
MAX_COOLDOWN = 60.0  # seconds an address is shed at most
FORGIVE = 60.0  # seconds after a cool-down ends before the next one starts again from `first`
SHARED_ADDRESSES = 65_536  # addresses the workers count together (32 bytes each); beyond, the least refused go first


class Shedding:
    """Refusals by address, and which addresses are shed until when.

    Args:
        limit: refused unverified requests per second one address may cause; 0 disables.
        first: seconds of the first cool-down.
        clock: seconds, monotonic.
        shared: a cell store the workers share (`policies.cells.SharedCells`): refusals are counted
            there, as a rate of `limit` a second with bursts of `limit`. None: this process counts
            alone, in windows of a second.
    """

    def __init__(self, limit: int, first: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 shared: Optional[Any] = None):
        self.limit, self.first, self._clock, self._shared = limit, first, clock, shared
        self._window_start, self._refused = clock(), {}
        self._until: dict[str, float] = {}  # shed address -> end of its cool-down
        self._cooldown: dict[str, tuple[float, float]] = {}  # address -> (last cool-down, when it ended)

    def refused(self, ip: str) -> None:
        """Count one refusal of an unverified request from `ip`; shed it past the limit."""
        if not self.limit:
            return
        now = self._clock()
        if now - self._window_start >= WINDOW:  # a new window: the counts of the last one go
            self._window_start, self._refused = now, {}
            self._forget_old(now)
        if self._over(ip) and self.shed_for(ip) == 0.0:
            last, ended = self._cooldown.get(ip, (0.0, 0.0))
            cooldown = min(MAX_COOLDOWN, last * 2) if last and now - ended < FORGIVE else self.first
            self._until[ip] = now + cooldown
            self._cooldown[ip] = (cooldown, now + cooldown)
            self._refused.pop(ip, None)

    def _over(self, ip: str) -> bool:
        """Count a refusal of `ip`: whether it is past the limit."""
        if self._shared is not None:  # GCRA: the (limit + 1)th refusal at once is the first refused
            return self._shared.admit(f"refused:{ip}", 1.0 / self.limit, (self.limit - 1) / self.limit) > 0
        count = self._refused[ip] = self._refused.get(ip, 0) + 1
        return count > self.limit

    def shed_for(self, ip: str) -> float:
        """Seconds `ip` stays shed (0.0: it is not)."""
        until = self._until.get(ip)
        if until is None:
            return 0.0
        remaining = until - self._clock()
        if remaining <= 0:
            del self._until[ip]
            return 0.0
        return remaining

    @property
    def tracked(self) -> int:
        """Addresses remembered (refused this second, or shed within the last minute): bounded."""
        return len(self._refused.keys() | self._cooldown.keys() | self._until.keys())

    def _forget_old(self, now: float) -> None:
        # Cool-downs over, and those that ended over `FORGIVE` ago, no longer count: memory stays bounded.
        self._until = {ip: until for ip, until in self._until.items() if until > now}
        self._cooldown = {ip: c for ip, c in self._cooldown.items() if now - c[1] < FORGIVE}
