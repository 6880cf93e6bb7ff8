"""The bounds a public socket needs that the HTTP server lacks, as a thin protocol around it.

uvicorn's HTTP protocol is wrapped, not changed: `Guarded` receives the connection's events first
and passes them on. What it adds:
- one address (an IPv6 prefix: see addresses.py) holds at most `max_per_address` connections;
- when `max_connections` are open, a new one from an address holding fewer than the heaviest holder
  takes the place of that holder's oldest idle connection (awaiting a request): many addresses cannot
  crowd a validator out by holding idle connections, and one cannot by holding many;
- the request line and headers must arrive within `header_timeout` of the connection opening or of
  the previous response, on every request (slowloris and idle keep-alive alike); their size is
  uvicorn's to bound (h11's `max_incomplete_event_size`);
- the connections of an address being shed (shedding.py) are not read while it is; what one had
  read already is kept for later up to `HELD_MAX` bytes (all of them up to `HELD_TOTAL`), and a
  connection sending more while shed is dropped;
- a trusted reverse proxy's connections carry many callers: never counted per address, never paused;
- a response holds at most `WRITE_BUFFER_HIGH` bytes unsent (the server waits for the client to read
  past it), and a connection closed with bytes its client never read is dropped, not left to flush.

Requests are the app's to see; the app tells `Connections` when one begins and when its response ends
(`request_began`, `response_done`), by the connection's peer address and port, which uvicorn puts in
the request's scope as `client`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from .addresses import Addresses
from .shedding import Shedding

log = logging.getLogger(__name__)

WRITE_BUFFER_HIGH = 65536  # bytes a connection holds unsent before its response waits for the client
HELD_MAX = 65536  # bytes a shed connection keeps of what it had sent; more and it is dropped
HELD_TOTAL = 16 << 20  # bytes all shed connections keep at once; more and the one sending is dropped


class Connections:
    """Every open connection of one server process, by address key."""

    def __init__(self, *, max_connections: int, max_per_address: int, header_timeout: float,
                 addresses: Addresses, shedding: Shedding):
        self.max_connections, self.max_per_address, self.header_timeout = max_connections, max_per_address, header_timeout
        self.addresses, self.shedding = addresses, shedding
        self._by_key: dict[str, list["Guarded"]] = {}  # oldest first
        self._by_peer: dict[tuple, "Guarded"] = {}
        self.total = 0
        self.held_bytes = 0  # what shed connections keep (`HELD_TOTAL`)

    def held_by(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    def admit(self, guard: "Guarded") -> bool:
        """Count a new connection in, making room if it is fair to; False: close it."""
        if not guard.via_proxy and self.held_by(guard.key) >= self.max_per_address:
            return False
        if self.total >= self.max_connections and not self._make_room(guard.key):
            return False
        self._by_key.setdefault(guard.key, []).append(guard)
        self._by_peer[guard.peer] = guard
        self.total += 1
        return True

    def _make_room(self, key: str) -> bool:
        """Close the oldest idle connection of the heaviest holder, if it holds more than `key` does."""
        mine = self.held_by(key)
        for holder in sorted(self._by_key.values(), key=len, reverse=True):
            if len(holder) <= mine:
                return False
            idle = next((g for g in holder if g.awaiting is not None), None)
            if idle is not None:
                log.info("max_connections reached: closing an idle connection of %s (it holds %d) for a newcomer",
                         idle.key, len(holder))
                idle.close()
                return True
        return False

    def gone(self, guard: "Guarded") -> None:
        held = self._by_key.get(guard.key)
        if held is not None and guard in held:
            held.remove(guard)
            self.total -= 1
            if not held:
                del self._by_key[guard.key]
        self._by_peer.pop(guard.peer, None)

    def request_began(self, client: Any) -> None:
        """A request's head arrived on the connection from `client` (ip, port): no deadline while it is served."""
        guard = self._by_peer.get(tuple(client) if client else None)
        if guard is not None:
            guard.awaiting = None

    def drop(self, client: Any) -> None:
        """Drop the connection from `client` (ip, port) at once: its client stopped reading."""
        guard = self._by_peer.get(tuple(client) if client else None)
        if guard is not None:
            guard.close()

    def largest_unsent(self) -> int:
        """The most bytes any one connection holds unsent."""
        return max((g.transport.get_write_buffer_size() for g in self._by_peer.values()), default=0)

    def response_done(self, client: Any) -> None:
        """A response on the connection from `client` (ip, port) ended: its next request's head is due."""
        guard = self._by_peer.get(tuple(client) if client else None)
        if guard is not None:
            guard.await_request()


class Guarded(asyncio.Protocol):
    """An HTTP protocol (`inner`) with the bounds of `connections`. Made per connection by
    `guarded_protocol`, with the keyword arguments uvicorn gives its protocols."""

    connections: Connections
    inner_class: type

    def __init__(self, **kwargs: Any):
        self.inner = self.inner_class(**kwargs)
        self.loop = kwargs.get("_loop") or asyncio.get_event_loop()
        self.transport: Optional[asyncio.Transport] = None
        self.admitted = False
        self.awaiting: Optional[float] = None  # loop time since when a request's head is due; None: one is in
        self._timer: Optional[asyncio.TimerHandle] = None
        self._held: Optional[list[bytes]] = None  # what arrived while the address was shed

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = tuple(peer[:2])
        caller = self.connections.addresses.peer(peer[0])
        self.key, self.via_proxy = caller.key, caller.via_proxy
        if not self.connections.admit(self):
            transport.close()
            return
        self.admitted = True
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.inner.connection_made(transport)
        self.await_request()
        if not self.via_proxy and (wait := self.connections.shedding.shed_for(self.key)):
            self._hold(wait, [])

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self._held is None and not self.via_proxy and (wait := self.connections.shedding.shed_for(self.key)):
            self._hold(wait, [])
        if self._held is not None:  # paused: keep it for later, in order
            self._keep(data)
            return
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._release()
        if self.admitted:
            self.connections.gone(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the guards --------------------------------------------------------------------------

    def await_request(self) -> None:
        """From now, the next request's head is due within `header_timeout`."""
        self.awaiting = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self.connections.header_timeout, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self.awaiting is None or self.transport.is_closing() and not self.transport.get_write_buffer_size():
            return
        left = self.awaiting + self.connections.header_timeout - self.loop.time()
        if left <= 0:
            log.debug("closing a connection of %s: no request head within %g s", self.key,
                      self.connections.header_timeout)
            self.close()
        else:
            self._timer = self.loop.call_later(left, self._check_deadline)

    def _hold(self, seconds: float, held: list[bytes]) -> None:
        self._held = held
        self.transport.pause_reading()  # the rest waits in the kernel, costing nothing
        self.loop.call_later(seconds, self._unshed)

    def _keep(self, data: bytes) -> None:
        """Keep what a shed connection sent, within `HELD_MAX` (and `HELD_TOTAL`); past that, drop it."""
        kept = sum(map(len, self._held))
        if kept + len(data) > HELD_MAX or self.connections.held_bytes + len(data) > HELD_TOTAL:
            log.debug("dropping a connection of %s: it sent over %d bytes while shed", self.key, kept + len(data))
            self.transport.abort()
            return
        self._held.append(data)
        self.connections.held_bytes += len(data)
        self.transport.pause_reading()

    def _release(self) -> Optional[bytes]:
        """What the connection kept while shed (no longer counted), or None if it was not."""
        if self._held is None:
            return None
        held, self._held = b"".join(self._held), None
        self.connections.held_bytes -= len(held)
        return held

    def _unshed(self) -> None:
        held = self._release()
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        if held:
            self.data_received(held)  # shed again if the address still is

    def close(self) -> None:
        """Close the connection; with bytes unsent (its client is not reading), drop it."""
        if self.transport is None:
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # close() would wait for the client to read them, maybe forever
        elif not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(inner_class: type, connections: Connections) -> type[Guarded]:
    """The protocol class uvicorn is configured with (`uvicorn.Config(http=...)`): `inner_class`
    (uvicorn's own HTTP protocol) behind the bounds of `connections`."""
    return type("GuardedHttp", (Guarded,), {"inner_class": inner_class, "connections": connections})
