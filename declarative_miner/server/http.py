"""uvicorn's httptools protocol with the bounds it lacks: header size, time to send headers,
connections per address, and an end for every connection whatever it sends.

httptools buffers request headers of any size; uvicorn keeps a connection that never sends a
request open forever, and after answering a request whose body was not read (a 403 before the
body, `GET /health` with a `Content-Length`) it keeps reading that body, a byte now and then, for
as long as the client likes. On a public endpoint each is cheap denial-of-service. Here:
- one address holds at most `max_connections_per_ip` connections (more are closed at once), so
  idle or slowloris connections from one place cannot use up `axon.max_connections`;
- the request line and headers must arrive within `header_timeout`, on every request, and the
  clock is re-armed after every response (a keep-alive connection idles at most that long);
- a response sent before its request's body was received says `connection: close` and closes the
  connection (a keep-alive client would otherwise send its next request into a closing socket);
- the body itself is bounded by the app (`axon.request_timeout`, `axon.max_body_bytes`);
- a request target must be a path (origin-form): btauth/1 signs the target as sent, and uvicorn
  would hand the app only the path of `http://host/path`;
- the connections of an address the app sheds (server/shedding.py: it floods requests that must
  be refused), open and new, are not read while it is shed;
- a connection from a trusted reverse proxy (`axon.trusted_proxies`) carries many callers: it is
  not counted against the proxy's address, and never paused (the app refuses a shed caller
  behind it, by the address the proxy names);
- a response's head waits for its body, so the two leave in one write (uvicorn writes each);
- `Transfer-Encoding` other than exactly `chunked` is refused (400, as RFC 9112 §6.3 asks when
  chunked is not the final coding, and a 4xx like every hostile request here), where httptools
  would read `gzip, chunked` as plain chunked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable, Optional, Sequence

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..networks import Network, in_networks
from .shedding import Shedding
from .tally import AddressTally

log = logging.getLogger(__name__)

LINGER = 1.0  # seconds an unread body is still drained after the answer, before the connection closes


class _GuardedHttpTools(HttpToolsProtocol):
    max_header_bytes = 32768
    header_timeout = 12.0
    max_connections_per_ip = 128
    per_ip: AddressTally  # open connections by peer address, shared by one server's connections
    shedding: Shedding  # the addresses the app sheds, shared with it
    proxies: Sequence[Network] = ()  # trusted reverse proxies

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._refused: Optional[tuple[str, str]] = None  # (status line, reason) of a request refused here
        # When the wait for a request's headers began (None while one is being served). One timer a
        # connection reads it, re-armed as it fires, not one timer a request (less CPU per request).
        self._awaiting_since: Optional[float] = self.loop.time()
        self._header_timer: Optional[asyncio.TimerHandle] = None
        self._lingering = False  # answered, closing: what still arrives is read and thrown away unparsed
        self._ip: Optional[str] = (transport.get_extra_info("peername") or ("?",))[0]
        self._held: Optional[list[bytes]] = None  # what arrived while the address was shed
        self._responses = _HeadWithBody(transport, self.loop, self._body_pending)
        if self.proxies and in_networks(self._ip, self.proxies):
            self._ip = None  # a proxy: neither counted nor paused (its callers are, by the app)
        elif self.per_ip.held_by(self._ip) >= self.max_connections_per_ip:
            self._ip = None
            transport.close()  # connection_lost cleans up after uvicorn
            return
        else:
            self.per_ip.take(self._ip)
        self._header_timer = self.loop.call_later(self.header_timeout, self._check_headers)
        if self._ip is not None and (wait := self.shedding.shed_for(self._ip)):
            self._hold(wait, [])

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._held is not None:  # already paused: keep it for later, in order
            self._held.append(data)
        elif self._ip is not None and (wait := self.shedding.shed_for(self._ip)):
            self._hold(wait, [data])
        else:
            super().data_received(data)

    def _hold(self, seconds: float, held: list[bytes]) -> None:
        self._held = held
        self.transport.pause_reading()  # the rest waits in the kernel, costing nothing
        self.loop.call_later(seconds, self._unshed)

    def _unshed(self) -> None:
        held, self._held = b"".join(self._held or ()), None
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        if held:
            self.data_received(held)  # shed again if the address still is

    def _check_headers(self) -> None:
        """Close the connection if its next request's headers are `header_timeout` late, else look
        again when they would be (a full period later while a request is being served)."""
        self._header_timer = None
        if self.transport.is_closing():
            return
        since = self._awaiting_since
        serving = since is None or (self.cycle is not None and not self.cycle.response_complete)
        left = self.header_timeout if serving else since + self.header_timeout - self.loop.time()
        if left <= 0:
            log.info("closing a connection that sent no complete request in %g s", self.header_timeout)
            self.transport.close()
            return
        self._header_timer = self.loop.call_later(left, self._check_headers)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ip is not None:
            self.per_ip.give_back(self._ip)
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._awaiting_since is None:  # pipelined: sent while the previous request was served
            self._awaiting_since = self.loop.time()

    def _refuse(self, status: str, reason: str) -> None:
        self._refused = (status, reason)
        raise ValueError(reason)  # httptools turns this into a parser error: send_400_response answers

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse_too_large()

    def _refuse_too_large(self) -> None:
        self._refuse("431 Request Header Fields Too Large",
                     f"request line and headers exceed {self.max_header_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, with the count and the Transfer-Encoding check inline: it runs for
        # every header of every request.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            self._refuse_too_large()
        name = name.lower()
        if name == b"transfer-encoding":
            self._check_transfer_encoding(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _check_transfer_encoding(self, value: bytes) -> None:
        if value.strip().lower() != b"chunked" or any(n == b"transfer-encoding" for n, _ in self.headers):
            self._refuse("400 Bad Request", f"Transfer-Encoding {value.decode('latin-1')!r} is not supported; "
                         "send the body with Content-Length or as plain chunked")

    def on_headers_complete(self) -> None:
        self._awaiting_since = None
        if not self.url.startswith(b"/"):
            self._refuse("400 Bad Request", "the request target must be a path such as /Prompting "
                         "(origin-form), not an absolute URL or *")
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a request to answer (an upgrade makes no cycle)
            self.cycle.transport = self._responses

    def _body_pending(self) -> bool:
        return self.cycle is not None and self.cycle.more_body

    def on_response_complete(self) -> None:
        if self.cycle is not None and (self.cycle.more_body or self._responses.said_close) \
                and not self.transport.is_closing():
            # Answered before the body arrived: nobody will read the rest. Send FIN now and close
            # a moment later (a lingering close: closing with unread bytes would send a reset,
            # which can destroy the answer before the client reads it).
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._lingering = True
            self.loop.call_later(LINGER, self.transport.close)
            return
        super().on_response_complete()
        self._awaiting_since = self.loop.time()  # the next request (or the idle keep-alive) is bounded again

    def send_400_response(self, msg: str) -> None:
        if self._refused is None:
            super().send_400_response(msg)
            return
        status, reason = self._refused
        log.warning("refused a request from %s: %s", self.client, reason)
        body = json.dumps({"error": status.split(" ", 1)[1].lower(), "reason": reason}).encode()
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n" % (status.encode(), len(body)) + body)
        self.transport.close()


class _HeadWithBody:
    """What a response is written through: its head waits for its body (at most until the loop's
    next turn), so a response leaves in one write, one system call and one wake-up of the client,
    where uvicorn writes two. A head written while the request's body is still to come says
    `connection: close` (`said_close`): the connection closes after this answer."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 body_pending: Callable[[], bool]):
        self._transport, self._loop, self._body_pending = transport, loop, body_pending
        self._head: Optional[bytes] = None
        self.said_close = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):  # 100 Continue: now
            if self._body_pending():
                self.said_close = True
                if b"\r\nconnection: close\r\n" not in data:  # uvicorn's own, when it closes anyway
                    data = data[:-2] + b"connection: close\r\n\r\n"
            self._head = data
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()


def guarded_protocol(max_header_bytes: int, header_timeout: float, max_connections_per_ip: int,
                     shedding: Shedding, proxies: Sequence[Network] = ()) -> type[HttpToolsProtocol]:
    """The httptools protocol class bounded by these limits (for `uvicorn.Config(http=...)`)."""
    return type("GuardedHttpTools", (_GuardedHttpTools,),
                {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout,
                 "max_connections_per_ip": max_connections_per_ip, "per_ip": AddressTally(), "shedding": shedding,
                 "proxies": list(proxies)})
