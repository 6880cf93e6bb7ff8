"""Whether the miner is ready to serve, from checks run in the background, never on a request.

Each check is a blocking callable returning why the miner is not ready (text) or None; they run in
a thread every `interval` seconds. `GET /ready` and the `miner_ready` gauge read the last result.
A reason that appears is logged once as a warning, and its clearing once as info.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)

Check = Callable[[], Optional[str]]


class Readiness:
    """The reasons the miner is not ready (none: ready), refreshed every `interval` seconds."""

    def __init__(self, checks: Sequence[Check], interval: float, on_change: Callable[[bool], None] = lambda ready: None):
        self._checks, self.interval, self._on_change = list(checks), interval, on_change
        self.reasons: list[str] = []
        self._task: Optional[asyncio.Task] = None

    def check(self) -> list[str]:
        """Run every check now (blocking); keep and return the reasons."""
        reasons = []
        for check in self._checks:
            try:
                reason = check()
            except Exception as exc:  # a check that fails says so; it never stops the others
                reason = f"{getattr(check, '__name__', 'a check')} failed: {type(exc).__name__}: {exc}"
            if reason:
                reasons.append(reason)
        for reason in set(reasons) - set(self.reasons):
            log.warning("Not ready: %s", reason)
        if self.reasons and not reasons:
            log.info("Ready again")
        self.reasons = reasons
        self._on_change(not reasons)
        return reasons

    async def start(self) -> None:
        """Check now, then every `interval` seconds, in a thread."""
        await asyncio.to_thread(self.check)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.check)
