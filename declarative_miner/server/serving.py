"""Running the ASGI app under uvicorn, on a socket the miner binds itself."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Iterator, Sequence

import uvicorn

from ..errors import ConfigError, ConfigProblem
from ..networks import parse_networks
from .app import MinerApp
from .http import guarded_protocol


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event, drain_timeout: float):
        super().__init__(config)
        self._ready, self._drain_timeout = ready, drain_timeout

    async def shutdown(self, sockets=None) -> None:
        # uvicorn closes its listener first, so requests arriving during the drain would be
        # refused at the socket; drain while still listening, so they get a 503 with a reason.
        if not self.force_exit:
            await self.config.app.drain(self._drain_timeout)
        await super().shutdown(sockets)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after its graceful shutdown, which turns a clean SIGTERM
        # drain into a death by signal; an operator expects exit status 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class HttpServer:
    """uvicorn serving `app` on `host:port` (0 = any free port), bound before serving starts,
    so a taken port is a clear error in the caller's thread. Stopping drains in-flight requests
    for at most `drain_timeout` seconds. Connections (in all and per address), header bytes and
    the time to send headers are bounded. A caller's address is its TCP peer's, or, behind one of
    `trusted_proxies` (addresses or CIDR), the one that proxy's `X-Forwarded-For` names; nothing
    else (uvicorn's `FORWARDED_ALLOW_IPS` included) decides whom to believe."""

    def __init__(self, app: MinerApp, host: str, port: int, *, drain_timeout: float, max_connections: int,
                 max_connections_per_ip: int, max_header_bytes: int, header_timeout: float,
                 trusted_proxies: Sequence[str] = ()):
        self.host, self._port = host, port
        self._ready = threading.Event()
        self._socket: socket.socket | None = None
        proxies = parse_networks(trusted_proxies)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                proxy_headers=bool(proxies), forwarded_allow_ips=[str(p) for p in proxies],
                                timeout_graceful_shutdown=max(1, int(drain_timeout)),
                                limit_concurrency=max_connections,
                                http=guarded_protocol(max_header_bytes, header_timeout, max_connections_per_ip,
                                                      app.shedding, proxies))
        self._uvicorn = _Uvicorn(config, self._ready, drain_timeout)

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket else self._port

    def bind(self) -> None:
        """Listen on host:port now, or raise a `ConfigError` naming `axon.port`."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise ConfigError([ConfigProblem(
                "axon.port", f"cannot listen on {self.host}:{self._port} (got {exc.strerror}; "
                "expected a free port: stop the other process or choose another axon.port)")]) from None
        self._socket = sock

    def serve(self) -> None:
        """Serve until `stop()` or SIGINT/SIGTERM (when on the main thread)."""
        if self._socket is None:
            self.bind()
        try:
            self._uvicorn.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def wait_ready(self, thread: threading.Thread, timeout: float) -> None:
        """Block until requests are accepted; raise if `thread` died or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if not thread.is_alive():
                raise RuntimeError("the server stopped during start-up; see the log above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:g} s")

    def stop(self) -> None:
        self._uvicorn.should_exit = True
