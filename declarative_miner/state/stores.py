"""Opening the store `state.store` names, with the three kinds of state built on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import disk, memory
from ..checks import REDIS_SCHEMES


def kind_of(setting: str) -> str:
    """`memory`, `disk` or `redis`, as `state.store` names it."""
    return "redis" if setting.startswith(REDIS_SCHEMES) else setting


CULL_INTERVAL = 30.0  # seconds between sweeps of what has expired on disk


@dataclass
class Store:
    """Nonces (the replay store), prompts (the cache's claims and answers) and cells (rate-limit
    budgets, refusal counts) in one place. Open it in the process that uses it (after a fork), close
    it when done."""

    kind: str
    nonces: Any
    prompts: Any
    cells: Any

    def open(self) -> None:
        for part in (self.nonces, self.prompts, self.cells):
            part.open()

    def close(self) -> None:
        for part in (self.nonces, self.prompts, self.cells):
            part.close()

    def cull(self) -> None:
        """Drop what has expired (disk only: memory and Redis drop it themselves). Blocking: call it
        off the event loop, every `CULL_INTERVAL` s."""
        for part in (self.nonces, self.prompts, self.cells):
            if (cull := getattr(part, "cull", None)) is not None:
                cull()

    def check(self) -> None:
        """Open it, ask it once (a Redis must answer), close it: what `mode=validate` asks of a store."""
        self.open()
        try:
            if (ping := getattr(self.nonces, "ping", None)) is not None:
                ping()
        finally:
            self.close()


def open_store(setting: str, *, home: Path, cache_directory: Path, retention: float, allowed_skew: float,
               lease: float, max_entries: int, size_limit: int, sync_writes: bool, max_callers: int) -> Store:
    """The store `setting` names, built from plain values (nothing is touched until `open`).

    Args:
        retention: seconds a nonce is kept (the freshness window and a second).
        allowed_skew: seconds a caller's clock may run ahead (the memory store's fence at start).
        lease: seconds a prompt's claim holds before it lapses (a prompt's longest run).
        max_entries: prompts the memory store remembers at once.
        size_limit, sync_writes: the disk store's prompt cache bound and fsync.
        max_callers: budgets the memory store keeps at once.
    """
    kind = kind_of(setting)
    if kind == "redis":
        from . import redis_store

        return Store(kind, redis_store.RedisNonces(setting, retention), redis_store.RedisPrompts(setting, lease),
                     redis_store.RedisCells(setting))
    if kind == "disk":
        return Store(kind, disk.DiskNonces(home / "replay" / "nonces", retention),
                     disk.DiskPrompts(cache_directory, lease, size_limit, sync_writes),
                     disk.DiskCells(home / "limits"))
    return Store(kind, memory.MemoryNonces(retention, allowed_skew), memory.MemoryPrompts(max_entries),
                 memory.MemoryCells(max_callers))
