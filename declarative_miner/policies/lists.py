"""Hotkey lists given inline or as a file that may change while the miner runs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from ..identity import identity

log = logging.getLogger(__name__)


def _parse(text: str) -> frozenset[str]:
    """One ss58 hotkey per line; `#` starts a comment. Raises ValueError on a bad entry."""
    keys = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            keys.add(identity(entry))  # the key, whatever prefix spells it
        except ValueError:
            raise ValueError(f"line {number}: {entry!r} is not an ss58 hotkey") from None
    return frozenset(keys)


class HotkeyList:
    """Inline hotkeys plus, optionally, those in `file`.

    The file is re-read when its modification time changes (looked at no more than once every
    `recheck` seconds, so a request costs a clock read). A file that fails to parse keeps the
    previous list, and the reason is logged.
    """

    def __init__(self, hotkeys: Sequence[str] = (), file: Optional[str] = None, recheck: float = 1.0):
        self.inline = _parse("\n".join(hotkeys))
        self.path = Path(file).expanduser() if file else None
        self.recheck = recheck
        self._from_file: frozenset[str] = frozenset()
        self._mtime: Optional[float] = None
        self._next_check = 0.0
        if self.path is not None:
            if not self.path.is_file():
                raise ValueError(f"no hotkey list file at {self.path}")
            self._reload()

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime:
                return
            self._from_file = _parse(self.path.read_text())
            self._mtime = mtime
            log.info("Loaded %d hotkeys from %s", len(self._from_file), self.path)
        except (OSError, ValueError) as exc:
            self._mtime = None if isinstance(exc, OSError) else mtime
            log.warning("keeping the previous %d hotkeys of %s: %s", len(self._from_file), self.path, exc)

    def __contains__(self, hotkey: object) -> bool:
        if self.path is not None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.recheck
                self._reload()
        try:
            key = identity(hotkey)
        except ValueError:
            return False
        return key in self.inline or key in self._from_file
