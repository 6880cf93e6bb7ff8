"""Bounded concurrency where waiting work starts in priority order (FIFO among equals)."""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from typing import Any, Optional

from ..errors import OverCapacity, PromptTimeout


class _Untracked:
    def inc(self) -> None:
        pass

    def dec(self) -> None:
        pass


class Scheduler:
    """At most `slots` jobs run at once; at most `max_waiting` wait, highest priority first.

    `waiting` and `overrunning` are gauges (`inc`/`dec`: metrics) that follow the counts of the same names.
    """

    def __init__(self, slots: int, max_waiting: int, *, waiting: Any = _Untracked(), overrunning: Any = _Untracked()):
        self._free = slots
        self.max_waiting = max_waiting
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._waiting = 0
        self._order = itertools.count()
        self.overrunning = 0  # slots held by prompts whose request already ended (a thread cannot be stopped)
        self.gauges = (waiting, overrunning)

    @property
    def waiting(self) -> int:
        """How many jobs wait for a slot now."""
        return self._waiting

    async def acquire(self, priority: float, timeout: float) -> None:
        """Wait for a slot; `OverCapacity` if the queue is full, `PromptTimeout` after `timeout` s."""
        if self._free > 0 and self._waiting == 0:
            self._free -= 1
            return
        if self._waiting >= self.max_waiting:
            raise OverCapacity(f"{self._waiting} requests are already waiting; try again later")
        granted = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (-priority, next(self._order), granted))
        self._waiting += 1
        self.gauges[0].inc()
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout)
        except asyncio.TimeoutError:
            self._abandon(granted)
            stuck = f" ({self.overrunning} held by prompts still running past their deadline)" if self.overrunning else ""
            raise PromptTimeout(f"no slot became free within {timeout:.3g} s{stuck}") from None
        except asyncio.CancelledError:
            self._abandon(granted)
            raise

    def _abandon(self, granted: asyncio.Future) -> None:
        if granted.done():
            self.release()  # the slot arrived as we gave up: pass it on
        else:
            granted.cancel()
            self._waiting -= 1
            self.gauges[0].dec()

    def release(self) -> None:
        """Give a slot back: to the best waiting job, or to the pool."""
        while self._heap:
            _, _, granted = heapq.heappop(self._heap)
            if not granted.done():
                self._waiting -= 1
                self.gauges[0].dec()
                granted.set_result(None)
                return
        self._free += 1


class Slot:
    """One acquired slot, held for the request inside `with Slot(scheduler):` (where it is
    `current_slot`). Work that outlives its request (a worker thread, which cannot be stopped)
    borrows the slot with `lend_until`, so the slot frees only when the work ends."""

    def __init__(self, scheduler: Scheduler):
        self._scheduler, self._held, self.lent = scheduler, True, False
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> Slot:
        self._token = current_slot.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        current_slot.reset(self._token)
        if not self.lent:
            self.release()

    def lend_until(self, work: asyncio.Future) -> None:
        self.lent = True
        self._scheduler.overrunning += 1
        self._scheduler.gauges[1].inc()
        work.add_done_callback(lambda _: self._returned())

    def _returned(self) -> None:
        self._scheduler.overrunning -= 1
        self._scheduler.gauges[1].dec()
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._scheduler.release()


current_slot: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("current_slot", default=None)
