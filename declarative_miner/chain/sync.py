"""Keeping the miner's metagraph fresh in the background, never on the request path."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

from .metagraph import Metagraph

log = logging.getLogger(__name__)


class MetagraphSync:
    """Holds the newest snapshot in `current` (replaced whole, so readers never see a mix) and
    re-reads it with `load` every `interval` seconds; a failed read keeps the last snapshot."""

    def __init__(self, load: Callable[[], Metagraph], interval: float):
        self._load, self.interval = load, interval
        self.current: Metagraph = load()
        self.failure: Optional[str] = None  # why the last refresh failed; None once one works
        self._task: Optional[asyncio.Task] = None
        self._listeners: list[Callable[[Metagraph], None]] = []

    def listen(self, listener: Callable[[Metagraph], None]) -> None:
        """Call `listener(snapshot)` with the current snapshot now and with every new one."""
        self._listeners.append(listener)
        listener(self.current)

    async def start(self) -> None:
        """Refresh in the background; at once if a refresh came due while the miner was built
        (a model that loads for minutes must not leave the first requests a stale snapshot)."""
        if self.current.age >= self.interval:
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def refresh(self) -> None:
        """Read a new snapshot now (in a thread: loaders may block)."""
        try:
            self.current, self.failure = await asyncio.to_thread(self._load), None
            for listener in self._listeners:
                listener(self.current)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.warning("metagraph refresh failed, serving on the snapshot from %.0f s ago: %s",
                        self.current.age, exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
