"""A request's work stops when its caller leaves."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from ..errors import ClientGone

WATCH_AFTER = 0.05  # seconds into the work before a request starts watching for its caller leaving


class CancelledIfGone:
    """Cancel the work inside `with CancelledIfGone(receive):` (in a task) when the client
    disconnects, and raise `ClientGone` instead.

    Once the body is read, the ASGI server's `receive()` returns only `http.disconnect`: when the
    client goes, or when the response is complete. Entering gives `finishing`, to call before
    sending the last of a response from inside the block. The watch starts `WATCH_AFTER` s in:
    most answers are done by then, and need no watching task of their own.
    """

    def __init__(self, receive: Callable):
        self._receive, self._gone = receive, False
        self._watcher: Optional[asyncio.Task] = None

    def __enter__(self) -> Callable[[], None]:
        self._task, loop = asyncio.current_task(), asyncio.get_running_loop()
        self._timer: Optional[asyncio.TimerHandle] = loop.call_later(WATCH_AFTER, self._watch)
        return self.finishing

    def _watch(self) -> None:
        self._timer, self._watcher = None, asyncio.get_running_loop().create_task(self._until_gone())

    async def _until_gone(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._task.cancel()

    def finishing(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], traceback: Any) -> bool:
        self.finishing()
        if kind is asyncio.CancelledError and self._gone:
            self._task.uncancel()
            raise ClientGone("the client disconnected before the answer was complete") from None
        return False
