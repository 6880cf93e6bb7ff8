"""Several server processes on one port: the parent binds, forks the workers, and supervises."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from typing import Callable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def supervise(count: int, serve: Callable[[], None]) -> None:
    """Run `serve` in `count` forked workers until SIGINT/SIGTERM, which is passed on to them
    (each drains its in-flight requests). A worker that dies otherwise is replaced."""
    workers: set[int] = set()
    stopping = False

    def spawn() -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                _end_with(parent)
                serve()
                code = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)  # never return into the parent's code
        workers.add(pid)

    def stop(sig: int, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(count):
            spawn()
        log.info("Supervising %d workers: %s", count, sorted(workers))
        while workers:
            pid, status = os.wait()
            workers.discard(pid)
            if not stopping:
                log.error("worker %d exited (status %d); starting another", pid, status)
                spawn()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _end_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM (a drain) when the supervisor dies, kill -9
    included: orphans would go on serving the port unsupervised, and a restart could not bind it."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning("worker %d will outlive its supervisor (prctl: %s)", os.getpid(), os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
