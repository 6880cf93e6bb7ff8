"""Who may start being read: bounds on unverified work, fair by address.

Anyone can claim a validator's hotkey, so until its signature checks out a request is a stranger's:
bounded per address (key) and in total, at most half the in-flight budget, so forged claims never
crowd out verified work. Within that half, an address holding little goes ahead of addresses holding
much: when the unverified pool is full, a newcomer from an address holding fewer than the heaviest
holder takes the place of that holder's oldest unverified request, which is refused (503) to make room.
The body bytes unverified requests hold are bounded in total the same way: a body that would pass the
bound makes room by refusing requests of the address holding the most bytes, if it holds more.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from ..errors import OverCapacity, RateLimited


class Ticket:
    """One unverified request in the pool."""

    __slots__ = ("key", "task", "evicted", "bytes")

    def __init__(self, key: str, task: Optional[asyncio.Task]):
        self.key, self.task, self.evicted, self.bytes = key, task, False, 0


class Unverified:
    """The unverified requests in flight, by address key, oldest first."""

    def __init__(self, max_total: int, max_per_key: int, max_bytes: int):
        self.max_total, self.max_per_key, self.max_bytes = max_total, max_per_key, max_bytes
        self._by_key: dict[str, list[Ticket]] = {}
        self.total = self.bytes = 0

    def held_by(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    def enter(self, key: str) -> Ticket:
        """Admit one unverified request from `key` (the current task), or refuse it."""
        if (held := self.held_by(key)) >= self.max_per_key:
            raise RateLimited(f"{held} unverified requests from {key} are in flight; send the body promptly "
                              "and wait for the answers", headers={"retry-after": "1"})
        if self.total >= self.max_total and not self._make_room(held):
            raise OverCapacity(f"{self.total} unverified requests are in flight; try again later",
                               headers={"retry-after": "1"})
        ticket = Ticket(key, asyncio.current_task())
        self._by_key.setdefault(key, []).append(ticket)
        self.total += 1
        return ticket

    def _make_room(self, newcomer_holds: int) -> bool:
        heaviest = max(self._by_key.values(), key=len, default=[])
        if len(heaviest) <= newcomer_holds:  # an address holding one yields to one holding none
            return False
        victim = next((t for t in heaviest if t.task is not None), None)
        return victim is not None and self._evict(victim)

    def read(self, ticket: Ticket, size: int) -> None:
        """`ticket`'s request received `size` more body bytes; refuse it if they cannot be held."""
        while self.bytes + size > self.max_bytes:
            mine = self._bytes_of(ticket.key) + size
            heaviest = max(self._by_key, key=self._bytes_of)
            if heaviest == ticket.key or self._bytes_of(heaviest) <= mine:
                raise OverCapacity(f"unverified requests hold {self.bytes} body bytes (bound {self.max_bytes}); "
                                   "try again later", headers={"retry-after": "1"})
            self._evict(max(self._by_key[heaviest], key=lambda t: t.bytes))
        ticket.bytes += size
        self.bytes += size

    def _bytes_of(self, key: str) -> int:
        return sum(t.bytes for t in self._by_key.get(key, ()))

    def _evict(self, victim: Ticket) -> bool:
        victim.evicted = True
        victim.task.cancel()  # its request ends with OverCapacity (see `evicted_from`)
        self.leave(victim)
        return True

    def leave(self, ticket: Ticket) -> None:
        held = self._by_key.get(ticket.key)
        if held is not None and ticket in held:
            held.remove(ticket)
            self.total -= 1
            self.bytes -= ticket.bytes
            if not held:
                del self._by_key[ticket.key]


def evicted_from(ticket: Ticket) -> OverCapacity:
    """The refusal of a request that made room for a lighter address (call when it is cancelled)."""
    if ticket.task is not None:
        ticket.task.uncancel()
    return OverCapacity("unverified requests from your address made room for another address's",
                        headers={"retry-after": "1"})
