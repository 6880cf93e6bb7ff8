"""The hotkey's secrets never leave its keyfile, and what the miner writes is not open to others."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from .test_first_run import Running


def test_no_private_key_or_mnemonic_in_logs_cfg_output_health_or_metrics(tmp_path):
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running("axon.port=0", env=env, cwd=tmp_path)
    try:
        port = miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1)
        served = httpx.get(f"http://127.0.0.1:{port}/health").text + httpx.get(f"http://127.0.0.1:{port}/metrics").text
        subprocess.run([sys.executable, "-m", "declarative_miner.client", "hello", "--port", port], env=env,
                       cwd=tmp_path, capture_output=True, timeout=60)
    finally:
        miner.stop()
    shown = subprocess.run([sys.executable, "-m", "declarative_miner", "--cfg", "job"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60).stdout
    wallets = tmp_path / "home" / "dev" / "wallets"
    everything = "".join(miner.seen) + served + shown + "".join(
        p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    for keyfile in (wallets / "dev-miner" / "hotkeys" / "default", wallets / "dev-validator" / "hotkeys" / "default"):
        secrets = json.loads(keyfile.read_text())
        for field in ("privateKey", "secretPhrase", "secretSeed"):
            assert secrets[field] and secrets[field] not in everything, field
            assert secrets[field].removeprefix("0x") not in everything, field
    assert json.loads(keyfile.read_text())["ss58Address"] in everything  # the public part is shown
