"""A real bittensor 10.5.0 `Dendrite` (in a venv of its own) against the running miner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

BITTENSOR_V10 = "bittensor==10.5.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "declarative-miner-tests" / "bt-10.5.0"
DRIVER = Path(__file__).parent / "v10" / "dendrite_driver.py"


@pytest.fixture(scope="session")
def v10_python() -> Path:
    """The interpreter of a venv holding bittensor 10.5.0, created once and cached (~30 s)."""
    python, ready = CACHE / "bin" / "python", CACHE / ".ready"
    if not ready.exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        venv.create(CACHE, with_pip=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", BITTENSOR_V10],
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            shutil.rmtree(CACHE, ignore_errors=True)
            unreachable = any(s in result.stderr for s in ("Could not find a version", "NewConnectionError",
                                                           "Temporary failure in name resolution"))
            if unreachable:
                pytest.skip(f"PyPI is unreachable, so {BITTENSOR_V10} cannot be installed: {result.stderr[-300:]}")
            pytest.fail(f"installing {BITTENSOR_V10} failed:\n{result.stderr[-2000:]}")
        ready.touch()
    return python


def dendrite(v10_python: Path, miner, wallets_dir: Path, wallet: str, *scenarios: str) -> dict:
    result = subprocess.run([str(v10_python), str(DRIVER), str(wallets_dir), wallet, miner.hotkey,
                             str(miner.port), *scenarios], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(wallets_dir.parent)})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"scenario"')]
    return {r["scenario"]: r for r in map(json.loads, lines)}


def test_a_real_v10_dendrite_is_served_plain_and_streaming_and_replays_are_refused(
        v10_python, make_miner, wallets_dir):
    with make_miner() as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", "plain", "stream", "replay")
    assert seen["plain"] == {"scenario": "plain", "is_success": True, "completion": "hello from v10",
                             "status_code": 200, "status_message": "Success"}
    assert seen["stream"]["completion"] == "one two three" and seen["stream"]["chunks"] >= 1
    assert seen["stream"]["is_success"] is True
    assert seen["replay"]["statuses"] == [200, 401]


def test_a_real_v10_dendrite_from_a_non_validator_is_told_why(v10_python, make_miner, wallets_dir):
    with make_miner() as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "stranger", "plain")
    assert seen["plain"]["is_success"] is False
    assert seen["plain"]["status_code"] == 403
    assert seen["plain"]["status_message"] == "blacklisted: registered: hotkey is not registered on netuid 1"
