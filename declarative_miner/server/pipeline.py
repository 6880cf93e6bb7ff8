"""A request's way through the miner, cheapest check first.

In-flight, per-address and body-size guards; the blacklist on the *claimed* hotkey (a refusal never
reads the body); the body, within `request_timeout`; the signature in the request's wire format (only a
verified caller is served); the verified caller's budgets; the body's shape; priority; a scheduler
slot; then the answer within the deadline. A caller that disconnects stops its answer and frees its
slot. A ping (`POST /Synapse`) is verified and answered at once: as on a v10 Axon, no blacklist,
priority or slot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional

from ..auth.formats import WireFormat, WireFormats
from ..identity import claimed_identity
from ..errors import (BadRequest, Blacklisted, BodyTooLarge, NotAuthenticated, OverCapacity, PromptTimeout,
                      RateLimited, RequestError, RequestTimeout, StreamNotRead, Unavailable)
from ..prompting import Prompting, TerminalInfo
from ..runtime.leaving import CancelledIfGone
from ..runtime.scheduler import Scheduler, Slot
from ..synapses import Synapse
from .addresses import Caller
from .admission import Ticket, Unverified, evicted_from
from .shedding import Shedding

PING_ROUTE = "/Synapse"  # v10's ping: every stock Axon answers it, and template validators call it
PING_MAX_BODY = 65536  # a ping's body is a bare v10 Synapse (about 1 KB)
STREAM_PIECE = 65536  # a streamed chunk is sent in pieces of at most this, each drained before the next


@dataclass(frozen=True)
class Limits:
    """What one request may cost before it is refused."""

    max_body_bytes: int
    request_timeout: float  # seconds to read the body, and separately to queue and run the answer
    max_inflight: int  # requests anywhere in the pipeline at once
    max_unverified_per_ip: int  # requests from one address not yet verified (reading body, checking signature)
    max_unverified_bytes: int  # body bytes all unverified requests together may hold

    @property
    def max_unverified(self) -> int:
        """Unverified requests from all addresses together: half the in-flight budget, so the
        other half is kept for verified work whatever forged claims arrive."""
        return max(1, self.max_inflight // 2)


@dataclass
class Exchange:
    """One request as it goes through: what it is, who sent it, and how far it got."""

    scope: dict
    receive: Callable
    headers: dict[str, str]
    wire: WireFormat
    caller: Caller
    signer: Optional[str] = None  # the verified hotkey, once its signature checked out
    # A verified caller the miner serves (it passed the blacklist; for a ping, it is registered):
    # its refusals are its own, its replies signed, its requests logged one by one. Anyone else,
    # signed by a key made a moment ago or not signed at all, is a stranger counted by address.
    known: bool = False
    body_read: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def target(self) -> str:
        """The request target as the client sent it: what btauth/1 signs."""
        path = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string", b"")
        return (path + b"?" + query if query else path).decode("latin-1")


class Pipeline:
    """The checks and the answer for the declared request types (`synapses`) and the ping."""

    def __init__(self, *, wire_formats: WireFormats, synapses: Mapping[str, Synapse],
                 blacklist: Callable[[Prompting], tuple[bool, str]], priority: Callable[[Any], float],
                 answer: Callable[[Synapse, Any], Awaitable[Any]],
                 stream: Callable[[Synapse, Any], AsyncIterator[str]],
                 scheduler: Scheduler, limits: Limits, shedding: Shedding,
                 on_verified: Callable[[Prompting], None] = lambda request: None,
                 unavailable: Callable[[], Optional[str]] = lambda: None,
                 registered: Callable[[str], bool] = lambda hotkey: True):
        self.wire_formats, self.scheduler, self.limits, self.shedding = wire_formats, scheduler, limits, shedding
        self.routes = {synapse.route: synapse for synapse in synapses.values()}
        self.blacklist, self.priority, self.answer, self.stream = blacklist, priority, answer, stream
        self.on_verified, self.unavailable, self.registered = on_verified, unavailable, registered
        self.unverified = Unverified(limits.max_unverified, limits.max_unverified_per_ip, limits.max_unverified_bytes)
        self.inflight = 0

    def serves(self, path: str) -> bool:
        return path in self.routes or path == PING_ROUTE

    async def handle(self, ex: Exchange, send: Callable) -> Optional[tuple[dict, dict]]:
        """Serve one POST to a declared route or the ping: the JSON reply and its extra headers, or
        None when the answer was streamed."""
        if self.inflight >= self.limits.max_inflight:
            raise OverCapacity(f"{self.inflight} requests in flight; try again later", headers={"retry-after": "1"})
        self.inflight += 1
        try:
            synapse = self.routes.get(ex.scope["path"])
            if synapse is None:
                body = await self._ping(ex)
                return ex.wire.success({}, body, time.perf_counter() - ex.started)
            request, body = await self._admit(ex, synapse)
            priority = float(self.priority(request))
            with CancelledIfGone(ex.receive) as finishing:
                if synapse.stream:
                    return await self._stream(ex, send, synapse, request, priority, finishing)
                answered = await self._run(synapse, request, priority)
            reply = {**synapse.inputs_of(answered), **synapse.outputs_of(answered)}
            return ex.wire.success(reply, body, time.perf_counter() - ex.started)
        finally:
            self.inflight -= 1

    # -- before the work -------------------------------------------------------------------------

    async def _ping(self, ex: Exchange) -> dict:
        """A verified caller learns the miner is up, as a v10 Axon's `ping` answers it."""
        self._refuse_if_unavailable(ex, PING_MAX_BODY)
        self._claimed(ex)
        caller, body = await self._verify(ex, (), self.registered, PING_MAX_BODY)
        if not ex.known:  # anyone can make a key and sign: counted as a stranger's
            self.shedding.refused(ex.caller.key)
        return body

    async def _admit(self, ex: Exchange, synapse: Synapse) -> tuple[Any, dict]:
        """Everything before the work: guards, blacklist, body, signature, shape."""
        max_body = synapse.max_body_bytes or self.limits.max_body_bytes
        self._refuse_if_unavailable(ex, max_body)
        claimed = self._claimed(ex)
        blacklisted, reason = self.blacklist(Prompting(dendrite=TerminalInfo(hotkey=claimed, ip=ex.caller.address)))
        if blacklisted:
            raise Blacklisted(reason)
        caller, body = await self._verify(ex, synapse.hash_fields, lambda hotkey: True, max_body)  # the blacklist let it in
        self.on_verified(Prompting(dendrite=caller))
        return synapse.parse(body, caller), body

    def _refuse_if_unavailable(self, ex: Exchange, max_body: int) -> None:
        if ex.caller.via_proxy and (wait := self.shedding.shed_for(ex.caller.key)):
            # A shed address's own connections are not even read (connections.py); behind a trusted
            # proxy, whose connection carries other callers too, it is refused here.
            raise RateLimited(f"{ex.caller.address} caused too many refused requests; try again in {wait:.0f} s",
                              headers={"retry-after": str(max(1, round(wait)))})
        if reason := self.unavailable():
            raise Unavailable(reason, headers={"retry-after": "5"})
        self._check_length(ex.headers.get("content-length"), max_body)

    def _claimed(self, ex: Exchange) -> str:
        """The key a request claims to be signed by (nothing verified yet), in an accepted format."""
        self.wire_formats.require_accepted(ex.wire)
        if not (claimed := ex.wire.claimed_hotkey(ex.headers)):
            raise NotAuthenticated("the request carries no hotkey header; sign it with one of "
                                   f"{', '.join(sorted(self.wire_formats.accepted))}")
        return claimed_identity(claimed)

    @staticmethod
    def _check_length(length: Optional[str], max_body: int) -> None:
        if length is None:
            return
        if not (length.isascii() and length.isdigit() and len(length) <= 20):
            raise BadRequest(f"Content-Length {length[:40]!r} is not a number")
        if int(length) > max_body:
            raise BodyTooLarge(f"body of {length} bytes exceeds {max_body}")

    async def _verify(self, ex: Exchange, hash_fields: tuple[str, ...], serves: Callable[[str], bool],
                      max_body: int) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body (read only once the headers pass, at most
        `max_body` bytes); `serves` tells whether the miner serves a verified hotkey (`Exchange.known`)."""
        ticket = self.unverified.enter(ex.caller.key)
        try:
            early = ex.wire.before_body(ex.headers, ip=ex.caller.address)
            raw = await self._read_body(ex, ticket, max_body)
            caller, body = ex.wire.authenticate(ex.headers, raw, method=ex.scope["method"], path=ex.target,
                                                ip=ex.caller.address, early=early, hash_fields=hash_fields)
        except asyncio.CancelledError:
            if ticket.evicted:
                raise evicted_from(ticket) from None
            raise
        except RequestError as exc:
            ex.signer = exc.signer  # refused once verified: its signer's doing, if the miner serves it
            ex.known = exc.signer is not None and serves(exc.signer)
            raise
        finally:
            self.unverified.leave(ticket)
        ex.signer, ex.known = caller.hotkey, serves(caller.hotkey)
        return caller, body

    async def _read_body(self, ex: Exchange, ticket: Ticket, max_body: int) -> bytes:
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                body = await self._receive_body(ex.receive, ticket, max_body)
        except TimeoutError:
            raise RequestTimeout(f"body not received within {self.limits.request_timeout:g} s") from None
        ex.body_read = True
        return body

    async def _receive_body(self, receive: Callable, ticket: Ticket, max_body: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise BodyTooLarge(f"body exceeds {max_body} bytes")
            self.unverified.read(ticket, len(chunk))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- the work --------------------------------------------------------------------------------

    async def _slot(self, priority: float) -> float:
        """Wait for a scheduler slot (then hold it: `with Slot(self.scheduler):`); returns the
        deadline (loop time) shared by queueing and work."""
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout
        await self.scheduler.acquire(priority, self.limits.request_timeout)
        return deadline

    async def _run(self, synapse: Synapse, request: Any, priority: float) -> Any:
        deadline = await self._slot(priority)
        with Slot(self.scheduler):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self.answer(synapse, request)
            except TimeoutError:
                raise PromptTimeout(f"no answer within {self.limits.request_timeout:g} s") from None

    async def _stream(self, ex: Exchange, send: Callable, synapse: Synapse, request: Any, priority: float,
                      finishing: Callable[[], None]) -> None:
        """Stream the answer as it is produced. Errors before the first chunk are ordinary JSON
        errors; after it the status is sent, so the stream ends with the wire format's error frame."""
        deadline = await self._slot(priority)
        with Slot(self.scheduler):
            chunks = self.stream(synapse, request).__aiter__()
            try:
                first = await self._next(chunks, deadline)
                await send({"type": "http.response.start", "status": 200, "headers": ex.wire.stream_headers()})
                completion = []
                try:
                    chunk = first
                    while chunk is not None:
                        completion.append(chunk)
                        await self._send_read(send, ex.wire.frame(chunk), deadline)
                        chunk = await self._next(chunks, deadline)
                    tail = ex.wire.final("".join(completion))
                except RequestError as exc:
                    tail = ex.wire.stream_error(exc)
                finishing()
                await self._send_read(send, tail, deadline, last=True)
            finally:
                await chunks.aclose()

    async def _send_read(self, send: Callable, body: bytes, deadline: float, last: bool = False) -> None:
        """Send part of a stream (`send_body`): a stream nobody reads ends at the deadline."""
        try:
            async with asyncio.timeout_at(deadline):
                await send_body(send, body, last)
        except TimeoutError:
            raise StreamNotRead(f"the client did not read the answer within {self.limits.request_timeout:g} s") from None

    async def _next(self, chunks: AsyncIterator[str], deadline: float) -> Optional[str]:
        try:
            async with asyncio.timeout_at(deadline):
                return await chunks.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise PromptTimeout(f"no answer within {self.limits.request_timeout:g} s") from None


async def send_body(send: Callable, body: bytes, last: bool = True) -> None:
    """Send `body` piece by piece, each once the client has read enough of the one before (the
    server waits while its buffer is over its high-water mark): what a response holds unsent is
    bounded by that mark plus one piece, however large the answer."""
    for start in range(0, max(1, len(body)), STREAM_PIECE):
        await send({"type": "http.response.body", "body": body[start:start + STREAM_PIECE],
                    "more_body": not last or start + STREAM_PIECE < len(body)})
