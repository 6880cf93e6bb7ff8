"""What the service log says of requests: a line for each one a known caller sent (verified, and
served by the blacklist), and for the rest (strangers, fresh keys, forgeries, floods) one line per
address and interval with counts, so no flood can fill the disk."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Callable, Optional

log = logging.getLogger("declarative_miner.requests")

INTERVAL = 10.0  # seconds between the summaries of strangers' refusals
MAX_ADDRESSES = 100  # addresses named in one summary; the rest are counted together


class RequestLog:
    """Logs answered requests; `flush` writes the strangers' summary (called at least every `INTERVAL` s)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._since = clock()
        self._refused: dict[str, collections.Counter] = {}
        self._others: collections.Counter = collections.Counter()  # beyond MAX_ADDRESSES
        self._errors: collections.Counter = collections.Counter()  # unexpected failures, by kind
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        """Write the summary every `INTERVAL` s, on the serving loop."""
        async def every_interval() -> None:
            while True:
                await asyncio.sleep(INTERVAL)
                self.flush()

        self._task = asyncio.get_running_loop().create_task(every_interval())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.flush()

    def answered(self, *, signer: Optional[str], address: str, wire: str, method: str, route: str, status: int,
                 seconds: float) -> None:
        """One request answered (or refused) to a known caller (`signer`): a line; else counted for the summary."""
        if signer is not None:
            log.info("%s %s %s %s %s %d %.1f ms", signer, address, wire, method, route, status, seconds * 1000)
            return
        counts = self._refused.get(address)
        if counts is None:
            counts = self._others if len(self._refused) >= MAX_ADDRESSES else self._refused.setdefault(
                address, collections.Counter())
        counts[status] += 1

    def failed(self, exc: BaseException) -> None:
        """An unexpected failure answered 500: its traceback the first time in an interval, then counted."""
        kind = f"{type(exc).__name__}: {str(exc)[:200]}"
        if not self._errors[kind]:
            log.error("a request failed: %s", kind, exc_info=exc)
        self._errors[kind] += 1

    def flush(self) -> None:
        """Write the summary of what was counted since the last one, and start again."""
        if not (self._refused or self._others or self._errors):
            self._since = self._clock()
            return
        seconds = self._clock() - self._since
        for address, counts in self._refused.items():
            log.info("%s: %d requests from strangers in %.0f s (%s)", address, sum(counts.values()),
                     seconds, _statuses(counts))
        if self._others:
            log.info("more addresses: %d requests from strangers in %.0f s (%s)",
                     sum(self._others.values()), seconds, _statuses(self._others))
        for kind, count in self._errors.items():
            if count > 1:
                log.error("%d more requests failed the same way in %.0f s: %s", count - 1, seconds, kind)
        self._refused, self._others, self._errors = {}, collections.Counter(), collections.Counter()
        self._since = self._clock()


def _statuses(counts: collections.Counter) -> str:
    return ", ".join(f"{status}×{count}" for status, count in sorted(counts.items()))


class Repeats(logging.Filter):
    """Lets a logger's message through once per `interval` seconds; the next one that passes says how
    many were held back. For the HTTP server's warnings, which a stranger can cause at will (a
    malformed request, an unsupported upgrade)."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval, self._clock = interval, clock
        self._seen: dict[str, tuple[float, int]] = {}  # message -> (when it last passed, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key, now = str(record.msg), self._clock()
        passed, held = self._seen.get(key, (float("-inf"), 0))
        if now - passed < self.interval:
            self._seen[key] = (passed, held + 1)
            return False
        if len(self._seen) > MAX_ADDRESSES:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - passed:.0f} s)"
        return True


def quieten_server_warnings() -> None:
    """Hold back repeats of what strangers can make the server say at will (once in a process):
    uvicorn's warnings, and the connection guards' evictions."""
    for name in ("uvicorn.error", "declarative_miner.server.connections"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, Repeats) for f in logger.filters):
            logger.addFilter(Repeats())
