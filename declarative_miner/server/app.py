"""The miner's ASGI app: each request passes the cheapest checks first and is answered as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Sequence

import pydantic_core

from ..errors import (
    BadRequest,
    Blacklisted,
    BodyTooLarge,
    ClientGone,
    NotAuthenticated,
    NotFound,
    OverCapacity,
    PromptTimeout,
    RateLimited,
    RequestError,
    RequestTimeout,
    Unavailable,
)
from ..prompting import Prompting, TerminalInfo
from ..synapses import Synapse
from .deadline import Deadline
from .leaving import CancelledIfGone
from .metrics import CONTENT_TYPE, Metrics
from .scheduler import Scheduler, Slot
from .tally import AddressTally
from .shedding import Shedding
from .wire import WireFormat, WireFormats

log = logging.getLogger(__name__)

PING_ROUTE = "/Synapse"  # v10's ping: every stock Axon answers it, and template validators call it
HEALTH_ROUTE = "/health"
CALLER = "declarative_miner.caller"  # the scope key holding the verified caller's hotkey


@dataclass(frozen=True)
class Limits:
    """What one request may cost before it is refused."""

    max_body_bytes: int
    request_timeout: float  # seconds to read the body, and separately to queue and run the prompt
    max_inflight: int  # requests anywhere in the pipeline at once
    max_unverified_per_ip: int  # requests from one address not yet verified (reading body, checking signature)

    @property
    def max_unverified(self) -> int:
        """Unverified requests from all addresses together: half the in-flight budget, so the
        other half is kept for verified work whatever forged claims arrive."""
        return max(1, self.max_inflight // 2)


class MinerApp:
    """Serves each declared request type (`POST /<name>`), v10's ping (`POST /Synapse`) and
    `GET /health`.

    Each request is read in the wire format its headers claim (server/wire.py: btauth/1, v10,
    Epistula v2: signature, replay rules and reply framing); all run the same pipeline.

    Order, cheapest first: in-flight, per-address and body-size guards, blacklist on the
    *claimed* hotkey (a rejection never reads the body), read the body, verify the signature
    (only a verified caller is served), parse, budgets of verified callers (rate limits),
    priority, a scheduler slot, then the answer within the deadline. A caller that disconnects
    stops its answer and frees its slot. A ping is verified (guards, signature, replay) and
    answered at once: as on a v10 Axon, no blacklist, priority or slot. With `sign_reply`
    (bittensor 11's `http_auth.sign` bound to the miner's hotkey), every JSON reply but
    `/health`'s carries btauth/1 headers over its body, addressed to the verified caller.
    """

    def __init__(self, *, wire_formats: WireFormats, synapses: Mapping[str, Synapse],
                 blacklist: Callable[[Prompting], tuple[bool, str]],
                 priority: Callable[[Any], float],
                 answer: Callable[[Synapse, Any], Awaitable[Any]],
                 stream: Callable[[Synapse, Any], AsyncIterator[str]],
                 health: Callable[[], dict], scheduler: Scheduler, limits: Limits,
                 on_verified: Callable[[Prompting], None] = lambda request: None,
                 sign_reply: Optional[Callable[..., dict[str, str]]] = None,
                 shedding: Optional[Shedding] = None,
                 unavailable: Callable[[], Optional[str]] = lambda: None,
                 metrics: Optional[Metrics] = None,
                 on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
                 on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()):
        self.wire_formats, self.sign_reply = wire_formats, sign_reply
        self.shedding = shedding or Shedding(0)
        self.routes = {synapse.route: synapse for synapse in synapses.values()}
        self.blacklist, self.priority, self.answer, self.stream = blacklist, priority, answer, stream
        self.health, self.scheduler, self.limits = health, scheduler, limits
        self.on_verified, self.unavailable, self.metrics = on_verified, unavailable, metrics
        self.draining = False
        if metrics is not None:
            metrics.gauge("miner_inflight", "Requests anywhere in the pipeline", lambda: self.inflight)
        self.on_startup, self.on_shutdown = list(on_startup), list(on_shutdown)
        self.inflight = 0
        self.unverified = AddressTally()  # requests whose signature is not yet verified, by peer address

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and self.metrics is not None:
            await send_bytes(send, 200, self.metrics.render(), CONTENT_TYPE)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        wire = self.wire_formats.of(headers)
        try:
            answer = await self._route(scope, receive, send, headers, wire)
            status, (payload, extra) = 200, answer if answer is not None else (None, None)
        except ClientGone as exc:
            status, payload = exc.status, None  # nobody to answer
        except RequestError as exc:
            status, (payload, extra) = exc.status, wire.failure(exc)
            if 400 <= exc.status < 500 and CALLER not in scope:  # the caller's doing, and unproven
                self.shedding.refused(_peer(scope) or "?")
        except Exception as exc:  # a bug in a policy or hook: answer, log, keep serving
            log.exception("request failed")
            status, (payload, extra) = 500, wire.failure(RequestError(f"{type(exc).__name__}: {exc}"))
        if payload is not None:  # None: the answer was streamed
            body = encode_json(payload)
            if self.sign_reply is not None and scope["path"] != HEALTH_ROUTE:
                extra = {**extra, **self.sign_reply(method=scope["method"], path=_target(scope), body=body,
                                                    receiver_ss58=scope.get(CALLER))}
            await send_bytes(send, status, body, "application/json", extra)
        if self.metrics is not None:
            known = scope["path"] in self.routes or scope["path"] in (PING_ROUTE, HEALTH_ROUTE)
            route = scope["path"] if known else "other"
            self.metrics.observe(wire.name, route, status, time.perf_counter() - started)

    async def _route(self, scope: dict, receive: Callable, send: Callable, headers: dict,
                     wire: WireFormat) -> Optional[tuple[dict, dict]]:
        path, method = scope["path"], scope["method"]
        synapse = self.routes.get(path)
        if (synapse is not None or path == PING_ROUTE) and method == "POST":
            if self.inflight >= self.limits.max_inflight:
                raise OverCapacity(f"{self.inflight} requests in flight; try again later",
                                   headers={"retry-after": "1"})
            self.inflight += 1
            try:
                started = time.perf_counter()
                if synapse is None:
                    body = await self._ping(scope, receive, headers, wire)
                    return wire.success({}, body, time.perf_counter() - started)
                request, body = await self._admit(scope, receive, headers, wire, synapse)
                priority = float(self.priority(request))
                with CancelledIfGone(receive) as finishing:
                    if synapse.stream:
                        return await self._stream(send, synapse, request, priority, wire, finishing)
                    answered = await self._run(synapse, request, priority)
                reply = {**synapse.inputs_of(answered), **synapse.outputs_of(answered)}
                return wire.success(reply, body, time.perf_counter() - started)
            finally:
                self.inflight -= 1
        if path == HEALTH_ROUTE and method in ("GET", "HEAD"):
            health = {**self.health(), "inflight": self.inflight, "queued": self.scheduler.waiting,
                      "overrunning": self.scheduler.overrunning}
            return ({**health, "status": "draining"} if self.draining else health), {}
        routes = ", ".join(f"POST {route}" for route in self.routes)
        raise NotFound(f"no route {method} {path}; try {routes}, POST {PING_ROUTE} or GET {HEALTH_ROUTE}")

    async def _ping(self, scope: dict, receive: Callable, headers: dict, wire: WireFormat) -> dict:
        """A verified caller learns the miner is up, as a v10 Axon's `ping` answers it."""
        self._refuse_if_unavailable(headers)
        ip = self._caller_address(scope)
        self._claimed(headers, wire)
        _, body = await self._verify(scope, receive, headers, wire, ip, ())
        return body

    def _refuse_if_unavailable(self, headers: dict) -> None:
        if self.draining:
            raise Unavailable("the miner is shutting down", headers={"retry-after": "5", "connection": "close"})
        if reason := self.unavailable():
            raise Unavailable(reason, headers={"retry-after": "5"})
        self._check_length(headers.get("content-length"))

    async def _admit(self, scope: dict, receive: Callable, headers: dict, wire: WireFormat,
                     synapse: Synapse) -> tuple[Any, dict]:
        """Everything before the work: guards, blacklist, body, signature, shape."""
        self._refuse_if_unavailable(headers)
        ip = self._caller_address(scope)
        claimed = self._claimed(headers, wire)
        blacklisted, reason = self.blacklist(Prompting(dendrite=TerminalInfo(hotkey=claimed, ip=ip)))
        if blacklisted:
            raise Blacklisted(reason)
        caller, body = await self._verify(scope, receive, headers, wire, ip, synapse.hash_fields)
        self.on_verified(Prompting(dendrite=caller))
        return synapse.parse(body, caller), body

    async def _verify(self, scope: dict, receive: Callable, headers: dict, wire: WireFormat, ip: Optional[str],
                      hash_fields: tuple[str, ...]) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body (read only once the headers pass)."""
        counted = self._count_unverified(ip)
        try:
            early = wire.before_body(headers, ip=ip)
            raw = await self._read_body(receive)
            caller, body = wire.authenticate(headers, raw, method=scope["method"], path=_target(scope), ip=ip,
                                             early=early, hash_fields=hash_fields)
        except RequestError as exc:
            if exc.signer is not None:  # refused once verified: its signer's doing, not counted against the address
                scope[CALLER] = exc.signer
            raise
        finally:
            self.unverified.give_back(counted)
        scope[CALLER] = caller.hotkey  # whom a signed reply is addressed to
        return caller, body

    def _caller_address(self, scope: dict) -> Optional[str]:
        """The caller's address, refused (429) while it is shed. A shed address's own connections are
        not even read (server/http.py); this refuses it behind a trusted proxy, whose connection
        carries other callers too and so is never paused."""
        ip = _peer(scope)
        if ip is not None and (wait := math.ceil(self.shedding.shed_for(ip))):
            raise RateLimited(f"{ip} caused too many refused requests; try again in {wait} s",
                              headers={"retry-after": str(wait)})
        return ip

    def _claimed(self, headers: dict, wire: WireFormat) -> str:
        """The hotkey a request claims to be signed by (nothing verified yet), in an accepted format."""
        self.wire_formats.require_accepted(wire)
        if not (claimed := wire.claimed_hotkey(headers)):
            raise NotAuthenticated("the request carries no hotkey header; sign it with one of "
                                   f"{', '.join(sorted(self.wire_formats.accepted))}")
        return claimed

    def _count_unverified(self, ip: Optional[str]) -> str:
        """Count a request as unverified while its body is read and its signature checked (the
        caller gives it back); returns the address it is counted under.

        Anyone can claim a validator's hotkey; until the signature says otherwise the request is a
        stranger's, bounded per address and in total, so forged claims never crowd out verified work.
        """
        ip = ip or "?"
        if (held := self.unverified.held_by(ip)) >= self.limits.max_unverified_per_ip:
            raise RateLimited(f"{held} unverified requests from {ip} are in flight; "
                              "send the body promptly and wait for the answers", headers={"retry-after": "1"})
        if self.unverified.total >= self.limits.max_unverified:
            raise OverCapacity(f"{self.unverified.total} unverified requests are in flight; try again later",
                               headers={"retry-after": "1"})
        self.unverified.take(ip)
        return ip

    def _check_length(self, length: str | None) -> None:
        if length is None:
            return
        if not (length.isascii() and length.isdigit()):  # int() refuses other digits, such as ²
            raise BadRequest(f"Content-Length {length!r} is not a number")
        if int(length) > self.limits.max_body_bytes:
            raise BodyTooLarge(f"body of {length} bytes exceeds {self.limits.max_body_bytes}")

    async def _read_body(self, receive: Callable) -> bytes:
        try:
            with Deadline(asyncio.get_running_loop().time() + self.limits.request_timeout):
                return await self._receive_body(receive)
        except TimeoutError:
            raise RequestTimeout(f"body not received within {self.limits.request_timeout:g} s") from None

    async def _receive_body(self, receive: Callable) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise BodyTooLarge(f"body exceeds {self.limits.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _wait_for_slot(self, priority: float) -> float:
        """Wait for a scheduler slot (then hold it: `with Slot(self.scheduler):`); returns the
        deadline (loop time) shared by queueing and work."""
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout
        await self.scheduler.acquire(priority, self.limits.request_timeout)
        return deadline

    async def _run(self, synapse: Synapse, request: Any, priority: float) -> Any:
        deadline = await self._wait_for_slot(priority)
        with Slot(self.scheduler):
            try:
                with Deadline(deadline):
                    return await self.answer(synapse, request)
            except TimeoutError:
                raise PromptTimeout(f"no answer within {self.limits.request_timeout:g} s") from None

    async def _stream(self, send: Callable, synapse: Synapse, request: Any, priority: float, wire: WireFormat,
                      finishing: Callable[[], None]) -> None:
        """Stream the answer as it is produced. Errors before the first chunk are ordinary JSON
        errors; after it the status is sent, so the stream ends with the wire format's error frame."""
        deadline = await self._wait_for_slot(priority)
        with Slot(self.scheduler):
            chunks = self.stream(synapse, request).__aiter__()
            try:
                first = await self._next(chunks, deadline)
                await send({"type": "http.response.start", "status": 200, "headers": wire.stream_headers()})
                completion = []
                try:
                    chunk = first
                    while chunk is not None:
                        completion.append(chunk)
                        await send({"type": "http.response.body", "body": wire.frame(chunk), "more_body": True})
                        chunk = await self._next(chunks, deadline)
                    tail = wire.final("".join(completion))
                except RequestError as exc:
                    log.warning("stream ended early: %s", exc.reason)
                    tail = wire.stream_error(exc)
                finishing()
                await send({"type": "http.response.body", "body": tail})
            finally:
                await chunks.aclose()

    async def _next(self, chunks: AsyncIterator[str], deadline: float) -> Optional[str]:
        try:
            with Deadline(deadline):
                return await chunks.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise PromptTimeout(f"no answer within {self.limits.request_timeout:g} s") from None

    async def drain(self, timeout: float) -> None:
        """Refuse new prompts (503) and wait, at most `timeout` s, for those in flight to finish."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while self.inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            hooks = self.on_startup if message["type"] == "lifespan.startup" else self.on_shutdown
            try:
                for hook in hooks:
                    await hook()
            except Exception as exc:
                log.exception("%s failed", message["type"])
                await send({"type": message["type"] + ".failed", "message": str(exc)})
                return
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


def _peer(scope: dict) -> Optional[str]:
    """The client's address, when the server knows it."""
    return (scope.get("client") or (None,))[0]


def _target(scope: dict) -> str:
    """The request target as the client sent it: what btauth/1 signs."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


def encode_json(payload: Any) -> bytes:
    """`payload` as JSON, by pydantic_core (a tenth of json.dumps' time, text as UTF-8); what it
    refuses (text holding lone surrogates) by json.dumps, which escapes it."""
    try:
        return pydantic_core.to_json(payload)
    except pydantic_core.PydanticSerializationError:
        return json.dumps(payload).encode()


async def send_bytes(send: Callable, status: int, body: bytes, content_type: str,
                     headers: dict[str, str] | None = None) -> None:
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
