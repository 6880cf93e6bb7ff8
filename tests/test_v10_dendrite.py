"""A real bittensor 10.5.0 `Dendrite` (in a venv of its own) against the running miner."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

DRIVER = Path(__file__).parent / "v10" / "dendrite_driver.py"


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
