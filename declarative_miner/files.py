"""The miner's state on disk (wallets, caches, replay stores) is the operator's alone."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077  # files 0600, directories 0700
HOME_VARIABLE, DEFAULT_HOME = "DECLARATIVE_MINER_HOME", "~/.declarative_miner"  # where the state lives


def default_home() -> str:
    """The miner's state directory, as `home` in the config defaults to it."""
    return os.environ.get(HOME_VARIABLE, DEFAULT_HOME)


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) if missing, and make it 0700 whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by the owner only (0600)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temporary, path)
