"""Several server processes on one port: the parent binds, forks the workers, and supervises."""

from __future__ import annotations

import logging
import os
import signal
from typing import Callable

log = logging.getLogger(__name__)


def supervise(count: int, serve: Callable[[], None]) -> None:
    """Run `serve` in `count` forked workers until SIGINT/SIGTERM, which is passed on to them
    (each drains its in-flight requests). A worker that dies otherwise is replaced."""
    workers: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
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
