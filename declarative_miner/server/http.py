"""uvicorn's httptools protocol with the bounds it lacks: header size, and time to send headers.

httptools buffers request headers of any size and uvicorn keeps a connection that never sends a
request open forever; on a public endpoint both are cheap denial-of-service. These bounds hold
before the ASGI app sees anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class _GuardedHttpTools(HttpToolsProtocol):
    max_header_bytes = 32768
    header_timeout = 12.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes, self._refused = 0, None
        self._header_timer: Optional[asyncio.TimerHandle] = None
        self._start_header_timer()

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            log.info("closing a connection that sent no complete request in %g s", self.header_timeout)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._start_header_timer()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refused = f"request line and headers exceed {self.max_header_bytes} bytes"
            raise ValueError(self._refused)  # httptools turns this into a parser error

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused is None:
            super().send_400_response(msg)
            return
        log.warning("refused a request from %s: %s", self.client, self._refused)
        body = json.dumps({"error": "headers too large", "reason": self._refused}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        self.transport.close()


def guarded_protocol(max_header_bytes: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """The httptools protocol class bounded by these limits (for `uvicorn.Config(http=...)`)."""
    return type("GuardedHttpTools", (_GuardedHttpTools,),
                {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout})
