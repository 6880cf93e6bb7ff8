"""Replay protection: every accepted (signer, nonce) is kept for the freshness window, so a
request is served at most once. One store serves every wire format (their keys never collide).

- `memory` (the default): a dict in one process; with `axon.workers` > 1 a table the machine's
  worker processes share, which outlives a worker killed alone. Nothing on the request path touches
  the disk. A clean stop saves the nonces still fresh and the next start loads them. A running
  store touches a marker file every `HEARTBEAT` s (off the request path); after a crash of the
  miner (kill -9, power cut) the next start refuses every nonce that the lost store could have
  accepted: signed before the crash's last heartbeat plus `HEARTBEAT` and `allowed_skew`, or
  before the start itself. Either way a replay across a restart is refused; after a crash that
  restarted faster than those seconds, honest requests are refused for what remains of them.
- `disk`: diskcache, shared by processes and kept through a crash without fencing anything, at
  the price of a SQLite transaction per request.
- `redis://…` (several machines behind one hotkey): Redis `SET NX EX`, failing closed.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import diskcache

from ..errors import NotAuthenticated, Unavailable
from ..files import private_dir, write_private
from ..processes import alive
from ..redis_link import REDIS_SCHEMES, RedisLink
from ..shared_table import SharedTable, TableFull, digest

log = logging.getLogger(__name__)

HEARTBEAT = 0.5  # seconds between touches of a running memory store's marker file
CAPACITY = 1 << 18  # nonces in memory at once (8 MB): 20,000 signed requests a second for 13 s


def _saved_digest(key: str) -> bytes:
    """A saved entry's digest; a store saved before digests were kept saved "hotkey:nonce"."""
    try:
        return bytes.fromhex(key)
    except ValueError:
        return digest(key)


class _Seen:
    """One process's nonces by digest: a dict, and a queue by expiry that drops them in time."""

    def __init__(self):
        self._expiry: dict[bytes, float] = {}
        self._order: collections.deque[tuple[float, bytes]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, digest: bytes, now: float, expires: float) -> bool:
        with self._lock:
            while self._order and self._order[0][0] < now:
                expiry, old = self._order.popleft()
                if self._expiry.get(old) == expiry:
                    del self._expiry[old]
            if self._expiry.get(digest, 0.0) > now:
                return False
            self._expiry[digest] = expires
            self._order.append((expires, digest))
            return True

    def entries(self, now: float) -> Iterator[tuple[bytes, float]]:
        with self._lock:
            return iter([(digest, expires) for digest, expires in self._expiry.items() if expires > now])


class MemoryNonceStore:
    """btauth/1's `NonceStore` in memory, kept across clean restarts by `path`.

    Args:
        retention: seconds an accepted nonce is kept (at least the freshness window).
        path: where a clean stop saves the fresh nonces; None keeps nothing across restarts.
        allowed_skew: seconds a caller's clock may run ahead: after a crash, nonces up to this
            far past the start are refused too (a fast clock may have signed them before it).
        shared: kept in a table the worker processes forked after this share (`CAPACITY` nonces at
            once; a nonce is never dropped before its time: when its part of the table is full the
            request is refused with 503, never let through unchecked), else in a dict (one process:
            a third of the table's cost).
    """

    def __init__(self, retention: float, path: Optional[Path] = None, allowed_skew: float = 0.0,
                 shared: bool = False):
        self.retention = retention  # read by http_auth.verify to check it covers the window
        self._seen = SharedTable(CAPACITY) if shared else _Seen()
        self._path, self._owner = path, os.getpid()  # the process that saves it: never a worker
        self.fence_ns = 0  # nonces below this are refused: they may have been accepted before a crash
        self._stopped = threading.Event()
        if path is not None:
            self._restore(path, allowed_skew)
            threading.Thread(target=self._beat, args=(path.with_suffix(".running"),), daemon=True,
                             name="replay-heartbeat").start()

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """True the first time (hotkey, nonce) is seen within `retention`; False for a replay."""
        now = time.time()
        try:
            return self._seen.add(digest(f"{hotkey_ss58}:{nonce_ns}"), now, now + self.retention)
        except TableFull:
            raise Unavailable("the replay store is full for now (more signed requests in the freshness window "
                              "than it holds); try again") from None

    def _restore(self, path: Path, allowed_skew: float) -> None:
        private_dir(path.parent)
        marker = path.with_suffix(".running")
        if marker.exists() and not alive(marker.read_text().strip()):
            last_beat = marker.stat().st_mtime + HEARTBEAT + allowed_skew
            self.fence_ns = max(time.time_ns(), int(last_beat * 1e9))
            log.warning("the previous run did not stop cleanly: requests signed before %s are refused "
                        "(its replay store was in memory)", time.strftime("%H:%M:%S", time.localtime(last_beat)))
        elif path.exists():
            now = time.time()
            for key, expiry in json.loads(path.read_text()).items():
                if expiry > now:
                    self._seen.add(_saved_digest(key), now, expiry)
        path.unlink(missing_ok=True)
        write_private(marker, str(os.getpid()))

    def _beat(self, marker: Path) -> None:
        while not self._stopped.wait(HEARTBEAT):
            try:
                os.utime(marker)
            except OSError:  # removed under us: the next start treats this run as crashed, safely
                pass

    def close(self) -> None:
        """Save the nonces still fresh, so the next start refuses their replays (in the process that
        made the store: a worker stopping leaves it to the supervisor)."""
        if os.getpid() != self._owner:
            return
        self._stopped.set()
        if self._path is None:
            return
        fresh = {digest.hex(): expires for digest, expires in self._seen.entries(time.time())}
        write_private(self._path, json.dumps(fresh))
        self._path.with_suffix(".running").unlink(missing_ok=True)
        self._path = None


class DiskNonceStore:
    """btauth/1's `NonceStore` on disk: each (hotkey, nonce) accepted once, across processes."""

    fence_ns = 0  # the store survives a crash: nothing needs fencing

    def __init__(self, directory: str, retention: float):
        self.retention = retention
        private_dir(Path(directory))
        self._directory, self._pid, self._store = directory, None, None

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        if self._pid != os.getpid():  # a forked worker opens its own connection
            # No fsync: a nonce lost to a power cut is older than any freshness window by the time
            # the machine is back.
            self._store, self._pid = diskcache.Cache(self._directory, sqlite_synchronous=0), os.getpid()
        return self._store.add(f"{hotkey_ss58}:{nonce_ns}", None, expire=self.retention)

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store, self._pid = None, None


class RedisNonceStore:
    """btauth/1's `NonceStore` in Redis (SET NX EX), for several machines behind one hotkey.
    Unreachable Redis fails closed: the request gets 503, never a pass."""

    fence_ns = 0

    def __init__(self, url: str, retention: float):
        self.retention, self._expire = retention, int(retention) + 1
        self._redis = RedisLink(url, "the replay store")

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return bool(self._redis.call(self._redis.client.set, f"dm:nonce:{hotkey_ss58}:{nonce_ns}", 1, nx=True,
                                     ex=self._expire))

    def close(self) -> None:
        self._redis.close()


def shared_state(setting: str) -> str:
    """Where state shared by the miner's processes lives, as `axon.replay_store` says: `memory`
    (this machine's workers; `auto`), `disk` or `redis` (several machines)."""
    if setting.startswith(REDIS_SCHEMES):
        return "redis"
    return "disk" if setting == "disk" else "memory"


def open_store(setting: str, workers: int, home: str, *, max_age: float, allowed_skew: float):
    """The nonce store `axon.replay_store` names, keeping each nonce for the whole freshness
    window that `check_fresh` applies, and a second more."""
    retention = max_age + allowed_skew + 1.0
    directory = Path(home).expanduser() / "replay"
    where = shared_state(setting)
    if where == "redis":
        return RedisNonceStore(setting, retention)
    if where == "disk":
        return DiskNonceStore(str(directory / "nonces"), retention)
    return MemoryNonceStore(retention, directory / "nonces.json", allowed_skew, shared=workers > 1)


def check_fresh(nonce_ns: int, now_ns: int, *, max_age: float, allowed_skew: float, fence_ns: int) -> None:
    """Refuse a nonce outside the freshness window, or signed before a crash-restart."""
    if now_ns - nonce_ns > max_age * 1e9:
        raise NotAuthenticated(f"stale request: signed {(now_ns - nonce_ns) / 1e9:.2f} s ago, "
                               f"more than {max_age:g} s")
    if nonce_ns - now_ns > allowed_skew * 1e9:
        raise NotAuthenticated(f"the nonce is {(nonce_ns - now_ns) / 1e9:.2f} s in the future, "
                               f"more than {allowed_skew:g} s")
    check_fence(nonce_ns, fence_ns)


def check_fence(nonce_ns: int, fence_ns: int) -> None:
    """Refuse a nonce the replay store lost in a crash (see `MemoryNonceStore`)."""
    if nonce_ns < fence_ns:
        raise NotAuthenticated("signed before the miner restarted after a crash, when its replay store "
                               "was lost: sign the request again")
