"""The miner as of a git revision, beside this checkout's, for before/after figures from one run.

Its package is extracted (with its conf/ and recipes/) under another name, `dm_then`, so both can be
imported in one process or run side by side (`python -m dm_then`). The callables its config names
by `_target_` (the echo prompt, the blacklist rules) still resolve to this checkout's.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

PACKAGE = "dm_then"
REPOSITORY = Path(__file__).resolve().parents[1]


def extract(revision: str) -> Path:
    """A new directory holding `revision`'s package as `PACKAGE`: put it on sys.path or PYTHONPATH."""
    root = Path(tempfile.mkdtemp(prefix="dm-revision-"))
    archive = subprocess.run(["git", "archive", revision, "declarative_miner", "conf", "recipes"], cwd=REPOSITORY,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(root)], input=archive, check=True)
    (root / "declarative_miner").rename(root / PACKAGE)
    return root
