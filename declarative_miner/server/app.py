"""The miner's ASGI app: each request passes the cheapest checks first and is answered as JSON.

Routes: each declared request type (`POST /<name>`), v10's ping (`POST /Synapse`), `GET /health`
(alive) and `GET /ready` (200, or 503 with the reasons from the background checks of
runtime/readiness.py): both cheap, unsigned, and counted against their address as a refusal is, so
they cannot be flooded free.
Everything is decided here, so any ASGI server can run it (`uvicorn.run(Miner().asgi_app())` verifies,
refuses and answers); the socket-level bounds of connections.py come with the miner's own serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Optional, Sequence

from ..errors import BadRequest, ClientGone, HeadersTooLarge, NotFound, RequestError
from ..prompting import json_default
from .addresses import Addresses
from .connections import Connections
from .metrics import Metrics
from .pipeline import PING_ROUTE, Exchange, Pipeline, send_body
from .request_log import RequestLog
from .shedding import Shedding

log = logging.getLogger(__name__)

HEALTH_ROUTE, READY_ROUTE = "/health", "/ready"
_KNOWN = (PING_ROUTE, HEALTH_ROUTE, READY_ROUTE)


class MinerApp:
    """The ASGI app over `pipeline`.

    Args:
        pipeline: the checks and answers of the POST routes.
        addresses: who a request comes from (the peer, or what a trusted proxy says).
        shedding: refusals of strangers' requests, counted by address, shed past the limit.
        health: what `GET /health` answers.
        ready: why the miner is not ready (none: ready), as `GET /ready` answers it.
        validator: whether a verified caller holds a validator permit (its requests are counted by hotkey).
        max_header_bytes: the request line and headers may take at most this (431 beyond it).
        metrics, requests: counted and logged for each request.
        connections: the miner's own server's connection guards, told when a response ends (None:
            another server runs the app).
        sign_reply: the miner's signature on replies to known callers (auth/reply_signature.py).
        on_startup, on_shutdown: coroutines run in the ASGI lifespan (stores open and close there).
    """

    def __init__(self, *, pipeline: Pipeline, addresses: Addresses, shedding: Shedding,
                 health: Callable[[], dict], metrics: Metrics, requests: RequestLog, max_header_bytes: int,
                 ready: Callable[[], list[str]] = list, validator: Callable[[str], bool] = lambda hotkey: False,
                 connections: Optional[Connections] = None, sign_reply: Optional[Callable[..., dict]] = None,
                 on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
                 on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()):
        self.pipeline, self.addresses, self.shedding = pipeline, addresses, shedding
        self.health, self.metrics, self.requests = health, metrics, requests
        self.ready, self.validator = ready, validator
        self.max_header_bytes = max_header_bytes
        self.connections, self.sign_reply = connections, sign_reply
        self.on_startup, self.on_shutdown = list(on_startup), list(on_shutdown)
        self.startup_failure: Optional[str] = None  # why the ASGI lifespan's start-up failed, if it did

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            if self.connections is not None:
                self.connections.request_began(scope.get("client"))
            try:
                await self._http(scope, receive, send)
            finally:
                if self.connections is not None:
                    self.connections.response_done(scope.get("client"))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # a miner speaks no WebSocket: 403

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        ex = Exchange(scope, receive, headers, self.pipeline.wire_formats.of(headers), self.addresses.caller(scope))
        path, method = scope["path"], scope["method"]
        self.metrics.inflight.inc()
        try:
            self._check_head(scope)
            status = 200
            if method == "POST" and self.pipeline.serves(path):
                answer = await self.pipeline.handle(ex, send)
            elif path in (HEALTH_ROUTE, READY_ROUTE) and method in ("GET", "HEAD"):
                if path == HEALTH_ROUTE:
                    answer = self.health(), {}
                else:
                    reasons = self.ready()
                    status = 503 if reasons else 200
                    answer = {"status": "not ready" if reasons else "ready", "reasons": reasons}, {}
                if status < 400:  # free to anyone, so counted as a refusal is (a 503 is counted below)
                    self.shedding.refused(ex.caller.key)
            else:
                routes = ", ".join(f"POST {route}" for route in self.pipeline.routes)
                raise NotFound(f"no route {method} {path}; try {routes}, POST {PING_ROUTE}, GET {HEALTH_ROUTE} "
                               f"or GET {READY_ROUTE}")
            payload, extra = answer if answer is not None else (None, None)
        except ClientGone as exc:
            status, payload = exc.status, None  # nobody to answer, or nobody reading
            await self._drop(scope)
        except RequestError as exc:
            status, (payload, extra) = exc.status, ex.wire.failure(exc)
        except Exception as exc:  # a bug in a policy or hook: answer, log, keep serving
            self.requests.failed(exc)
            status, (payload, extra) = 500, ex.wire.failure(RequestError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.metrics.inflight.dec()
        if not ex.known and status >= 400 and status != 499:
            self.shedding.refused(ex.caller.key)  # a stranger's doing
        if payload is not None and not await self._reply(ex, send, status, payload, extra):
            status = ClientGone.status  # nobody read it
        route = path if path in self.pipeline.routes or path in _KNOWN else "other"
        seconds = time.perf_counter() - ex.started
        wire = ex.wire.name if ex.wire.claims(ex.headers) else "none"
        self.metrics.observe(wire, route, status, seconds)
        if ex.known and ex.signer and self.validator(ex.signer):
            self.metrics.validator_requests.labels(ex.signer, str(status)).inc()
        self.requests.answered(signer=ex.signer if ex.known else None, address=ex.caller.address, wire=wire, method=method,
                               route=route, status=status, seconds=seconds)

    def _check_head(self, scope: dict) -> None:
        # The server bounds a head only while it is incomplete (h11): one that arrives whole in a
        # single read is bounded here, before anything reads it.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + \
            sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self.max_header_bytes:
            raise HeadersTooLarge(f"request line and headers exceed {self.max_header_bytes} bytes",
                                  headers={"connection": "close"})
        names = {name for name, _ in scope["headers"]}
        if b"transfer-encoding" in names and b"content-length" in names:
            # Framed two ways: a proxy in front may have read it the other way (request smuggling).
            # Refused, and the connection ends with the answer (RFC 9112 §6.3).
            raise BadRequest("Transfer-Encoding and Content-Length both set; send one",
                             headers={"connection": "close"})

    async def _reply(self, ex: Exchange, send: Callable, status: int, payload: Any, extra: dict) -> bool:
        """Send the answer; False: its client did not read it within the request timeout (dropped)."""
        body = encode_json(payload)
        if self.sign_reply is not None and ex.known:  # a stranger gets no signature over words it chose
            extra = {**extra, **self.sign_reply(method=ex.scope["method"], target=ex.target, body=body,
                                                caller=ex.signer, request_signature=ex.wire.signature(ex.headers))}
        if not ex.body_read and _large_body(ex.headers):
            # Answered before a large body was read: say the connection ends here (RFC 9112 §9.6)
            # rather than take in what nobody reads; a small one is read past, for the next request.
            extra = {**extra, "connection": "close"}
        try:  # a client that does not read its answer does not hold its connection past the timeout
            async with asyncio.timeout(self.pipeline.limits.request_timeout):
                await send_bytes(send, status, body, "application/json", extra)
            return True
        except TimeoutError:
            await self._drop(ex.scope)
            return False

    async def _drop(self, scope: dict) -> None:
        """Drop the request's connection at once: its client is gone or not reading."""
        if self.connections is not None:
            self.connections.drop(scope.get("client"))
            await asyncio.sleep(0)  # asyncio tells the server the connection is lost: let it, before the app returns

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            hooks = self.on_startup if message["type"] == "lifespan.startup" else self.on_shutdown
            try:
                for hook in hooks:
                    await hook()
            except Exception as exc:
                log.exception("%s failed", message["type"])
                reason = f"{type(exc).__name__}: {exc}"
                if message["type"] == "lifespan.startup":
                    self.startup_failure = reason
                await send({"type": message["type"] + ".failed", "message": reason})
                return
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


UNREAD_BODY_KEPT = 65536  # bytes of an unread body the server reads past to keep the connection


def _large_body(headers: dict) -> bool:
    length = headers.get("content-length", "0")
    return "transfer-encoding" in headers or not (length.isdigit() and int(length[:20]) <= UNREAD_BODY_KEPT)


def encode_json(payload: Any) -> bytes:
    """`payload` as JSON text in UTF-8 (a lone surrogate a prompt returned is escaped, not an error)."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=json_default).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":"), default=json_default).encode()


async def send_bytes(send: Callable, status: int, body: bytes, content_type: str,
                     headers: Optional[dict[str, str]] = None) -> None:
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send_body(send, body)
