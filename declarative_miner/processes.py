"""Whether a process still runs: how a claim or a marker left by a process is known to be stale."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int | str) -> bool:
    """Whether process `pid` runs. A zombie (killed, not yet reaped) does not; nor does text that
    is not a pid (a damaged marker file)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
