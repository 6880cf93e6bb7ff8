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


def test_a_template_dummy_declared_in_yaml_is_answered_to_a_real_dendrite_and_its_ping_gets_200(
        v10_python, make_miner, wallets_dir):
    """The subnet template's `Dummy` and `ping_uids`, from a Dendrite that never heard of this project."""
    with make_miner("+recipe=template_dummy") as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", "dummy", "ping", "plain")
    assert seen["dummy"]["outputs"] == [42]
    assert seen["ping"] == {"scenario": "ping", "status_codes": [200], "status_messages": ["Success"]}
    assert seen["plain"]["completion"] == "hello from v10"  # the seed's Prompting is still answered beside it


def test_a_ping_from_a_stranger_is_verified_but_not_blacklisted(v10_python, make_miner, wallets_dir):
    """As on a stock Axon: the ping passes signature and replay checks, not the blacklist."""
    with make_miner() as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "stranger", "ping", "plain")
    assert seen["ping"]["status_codes"] == [200]
    assert seen["plain"]["status_code"] == 403


def test_a_burst_of_512_from_one_dendrite_is_all_served(v10_python, make_miner, wallets_dir):
    """Its pool delivers requests out of nonce order; every one not seen before is served."""
    with make_miner() as miner:  # the defaults: the Dendrite's pool keeps 100 in flight, under every guard
        seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", "burst:512")
    assert seen["burst:512"] == {"scenario": "burst:512", "served": 512, "refused": {}}
