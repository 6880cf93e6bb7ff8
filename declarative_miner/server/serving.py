"""Serving the ASGI app with uvicorn in this process, on a socket the miner binds itself.

uvicorn is configured, not changed: its h11 protocol (trailers never reach the request's headers,
header size bounded), no WebSocket, no proxy headers (addresses.py decides whom to believe), behind
the connection guards of connections.py. It serves on a thread of its own; this process's main thread
keeps the signals, so SIGINT/SIGTERM drain in-flight requests (uvicorn's graceful shutdown) and the
process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Any, Optional

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError, ConfigProblem
from .connections import Connections, guarded_protocol
from .request_log import quieten_server_warnings

log = logging.getLogger(__name__)


def uvicorn_config(app: Any, connections: Optional[Connections], *, header_timeout: float, drain_timeout: float,
                   max_header_bytes: int) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.Config` every miner process serves with."""
    quieten_server_warnings()
    http = guarded_protocol(H11Protocol, connections) if connections is not None else H11Protocol
    return dict(app=app, http=http,
                ws="none", lifespan="on", log_config=None, access_log=False, proxy_headers=False,
                server_header=False, timeout_keep_alive=max(1, round(header_timeout)),
                timeout_graceful_shutdown=max(1, round(drain_timeout)),
                h11_max_incomplete_event_size=max_header_bytes)


def bind(host: str, port: int, key: str = "axon.port") -> socket.socket:
    """A socket listening on host:port (0: any free port), or a `ConfigError` naming `key`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each accepted connection (it looks at the
    # socket's proto): without it a response's head and body, written apart, wait on a delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # `::` serves IPv4 callers too
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError([ConfigProblem(
            key, f"cannot listen on {host}:{port} (got {exc.strerror}; expected a free port: stop the "
            f"other process or choose another {key})")]) from None
    sock.set_inheritable(True)  # a supervisor's workers serve it too
    return sock


class HttpServer:
    """uvicorn serving on `sock` in a thread of its own."""

    def __init__(self, sock: socket.socket, config: dict[str, Any]):
        self.socket = sock
        self.server = uvicorn.Server(uvicorn.Config(**config))
        self._thread: Optional[threading.Thread] = None
        self.failed: Optional[BaseException] = None

    @property
    def app(self) -> Any:
        """The ASGI app it serves."""
        return self.server.config.app

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def start(self, timeout: float = 60.0) -> None:
        """Serve in the background; returns once requests are accepted, or raises why not."""
        self._thread = threading.Thread(target=self._serve, name="serving", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server stopped during start-up: {self.failed or 'see the log above'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:g} s")
            time.sleep(0.01)

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException as exc:  # uvicorn exits (SystemExit) when the app's start-up fails
            self.failed = exc

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (a second SIGINT stops at once), from the main thread."""
        handlers = {sig: signal.signal(sig, self._signalled) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while self._thread.is_alive():
                self._thread.join(0.2)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _signalled(self, sig: int, frame: Any) -> None:
        if self.server.should_exit and sig == signal.SIGINT:
            self.server.force_exit = True
        self.server.should_exit = True

    def stop(self) -> None:
        """Stop accepting, drain what is in flight, and return once the server is done."""
        self.server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
