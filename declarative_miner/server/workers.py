"""Several server processes on one socket, supervised by gunicorn (with uvicorn's gunicorn worker).

The miner is built once, here; gunicorn forks the workers from it (`preload_app`), each serving the
same ASGI app with the same uvicorn settings as one process does, and opening its own state
connections in the ASGI lifespan. gunicorn replaces a worker that dies (kill -9, the OOM killer) and
kills one whose event loop stops answering for `HEARTBEAT` seconds. What this module adds, through
gunicorn's public settings and hooks:
- a worker that fails to start (its ASGI lifespan startup fails) stops the miner: gunicorn halts at
  once, never respawning it, and `supervise` raises `WorkerFailed` with the worker's own reason;
- a worker ends with its supervisor, kill -9 included (the kernel sends it SIGTERM: a drain);
- SIGINT drains as SIGTERM does (gunicorn's quick stop would otherwise wait out the grace period);
- gunicorn's log lines go through the miner's logging; no control socket; signal handlers restored.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import Any, Callable, Iterator

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer
from uvicorn_worker import UvicornWorker

from .metrics import multiprocess_mode

log = logging.getLogger(__name__)

HEARTBEAT = 30  # seconds a worker's event loop may stop answering before gunicorn kills and replaces it
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM, signal.SIGTTIN, signal.SIGTTOU,
            signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)


class WorkerFailed(Exception):
    """A worker could not start; the miner stopped. `reason` is the worker's own."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Worker(UvicornWorker):
    """uvicorn's gunicorn worker, ending with its supervisor and draining on SIGQUIT (a quick stop)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        logging.getLogger("uvicorn.error").propagate = True  # through the miner's logging, as in one process

    def handle_exit(self, sig: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own SIGTERM handling: a drain

    async def callback_notify(self) -> None:
        if self.ppid != os.getppid():  # the supervisor is gone (where prctl is not there to say so)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.notify()


class _Log(glogging.Logger):
    """gunicorn's lines through the miner's logging (its handlers, its format), not a stream of their own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
        if not any(isinstance(f, _ClosedTwice) for f in self.error_log.filters):
            self.error_log.addFilter(_ClosedTwice())


class _ClosedTwice(logging.Filter):
    """Drops gunicorn's "Error while closing socket [Errno 9]" at each worker's exit: uvicorn closed
    the listener already, and gunicorn closes it again (benoitc/gunicorn#3013). Nothing failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Error while closing socket") and "[Errno 9]" in record.getMessage())


class _Application(BaseApplication):
    """gunicorn's documented custom application: no config file, no GUNICORN_CMD_ARGS, no argv."""

    def __init__(self, app: Any, options: dict[str, Any]):
        self._app, self._options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def _reporting(app: Any, write_end: int) -> Callable:
    """`app`, writing the reason of a failed ASGI lifespan startup to `write_end` (the supervisor reads it)."""
    async def reporting(scope: dict, receive: Callable, send: Callable) -> None:
        async def send_and_report(message: dict) -> None:
            if message["type"] == "lifespan.startup.failed":
                os.write(write_end, f"worker {os.getpid()}: {message.get('message', '')}\n".encode()[:4000])
            await send(message)
        await app(scope, receive, send_and_report if scope["type"] == "lifespan" else send)
    return reporting


def _after_fork(inherited: list[socket.socket]) -> Callable:
    def post_fork(arbiter: Any, worker: Any) -> None:
        for sock in inherited:  # listeners of the supervisor's (the metrics): not the worker's to hold
            sock.close()
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            log.warning("worker %d will notice its supervisor's death only at its next heartbeat", os.getpid())
        if os.getppid() != worker.ppid:  # it died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)
    return post_fork


def _child_exit(arbiter: Any, worker: Any) -> None:
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


@contextlib.contextmanager
def _restoring_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():  # gunicorn leaves its own installed
            signal.signal(sig, handler)


def supervise(app: Any, sock: socket.socket, workers: int, uvicorn_settings: dict[str, Any], *,
              graceful_timeout: float, inherited: list[socket.socket] = ()) -> None:
    """Serve `app` on `sock` in `workers` processes until SIGINT/SIGTERM (a drain of at most
    `graceful_timeout` s). Main thread only; takes `sock` over.

    Raises:
        WorkerFailed: a worker could not start (its reason, as it gave it).
    """
    settings = {k: v for k, v in uvicorn_settings.items() if k != "app"}
    worker_class = type("MinerWorker", (_Worker,), {"CONFIG_KWARGS": settings})
    read_end, write_end = os.pipe()
    parent = os.getpid()
    options = {"bind": [f"fd://{sock.detach()}"],  # gunicorn closes the descriptor it is given: hand it over
               "workers": workers, "worker_class": worker_class, "preload_app": True, "timeout": HEARTBEAT,
               "graceful_timeout": max(1, round(graceful_timeout)), "control_socket_disable": True,
               "logger_class": _Log, "loglevel": "info", "post_fork": _after_fork(list(inherited)),
               "child_exit": _child_exit, "proc_name": "declarative-miner"}
    log.info("Supervising %d workers (gunicorn)", workers)
    try:
        with _restoring_signals():
            _Application(_reporting(app, write_end), options).run()
        code = 0
    except BaseException as exc:
        if os.getpid() != parent:  # a worker unwinding out of gunicorn: never go on in the caller's code
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)
        if isinstance(exc, HaltServer):  # escapes run() when workers fail to boot at the same moment
            code = exc.exit_status
        elif isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            raise
    finally:
        os.close(write_end)
    os.set_blocking(read_end, False)  # what the workers wrote is there by now; never wait on a straggler
    with os.fdopen(read_end, "rb") as reasons:
        reported = (reasons.read() or b"").decode(errors="replace").strip()
    if code != 0:
        raise WorkerFailed(reported or f"a worker could not start (gunicorn exit status {code}); see the log above")
