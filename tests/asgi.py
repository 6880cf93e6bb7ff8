"""Driving the miner's ASGI app in process, as an ASGI server would: its lifespan (the stores open
there), then requests through `httpx.ASGITransport`."""

from __future__ import annotations

import asyncio
from typing import Any


class Lifespan:
    """`async with Lifespan(app):` runs the app's start-up, and its shut-down on the way out."""

    def __init__(self, app: Any):
        self.app = app
        self._to_app: asyncio.Queue = asyncio.Queue()
        self._from_app: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> "Lifespan":
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.get_running_loop().create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        assert message["type"] == "lifespan.startup.complete", message
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await self._from_app.get()
        assert message["type"] == "lifespan.shutdown.complete", message
        await self._task
