"""Several server processes on one port share the prompt cache and the replay store."""

from __future__ import annotations

import json
import os
import signal

import httpx
import yaml

from declarative_miner.client import MinerClient
from declarative_miner.server import v10

from .conftest import wait_until
from .test_first_run import Running


def test_two_workers_share_the_port_the_cache_and_the_replay_store(tmp_path, hotkeys, wallets_dir):
    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running("axon.port=0", "axon.workers=2", f"wallet.path={wallets_dir}",
                    f"network.metagraph_file={tmp_path}/mg.yaml", env=env, cwd=tmp_path)
    try:
        port = int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        miner.wait_for(r"on http://127\.0\.0\.1:(\d+)")  # the second worker is up too
        pids = set()
        wait_until(lambda: pids.add(httpx.get(f"http://127.0.0.1:{port}/health").json()["pid"]) or len(pids) == 2)

        client = MinerClient(hotkeys["dev-validator"], port=port)
        body = json.dumps({"roles": ["user"], "messages": ["once"]}).encode()
        headers = {**client.signed_headers(body), "connection": "close"}  # a new connection each time
        assert client.send(body, headers).status == 200
        replays = [client.send(body, headers) for _ in range(12)]
        assert {(r.status, r.reason.split(":")[0]) for r in replays} == {(401, "ReplayedRequest")}

        v10_client = MinerClient(hotkeys["dev-validator"], port=port)
        v10_headers, v10_body = v10.sign(hotkeys["dev-validator"], receiver=client.miner_hotkey(), roles=["user"],
                                         messages=["v10 once"], uuid=v10_client.uuid)
        v10_headers["connection"] = "close"
        assert v10_client.send(v10_body, v10_headers).status == 200
        assert {v10_client.send(v10_body, v10_headers).status for _ in range(12)} == {401}

        fresh = [MinerClient(hotkeys["dev-validator"], port=port) for _ in range(6)]  # separate connections
        duplicates = [c.prompt(["shared cache"]) for c in fresh]
        for c in fresh:
            c.close()
        assert sorted(r.status for r in duplicates) == [200] + [409] * 5
        client.close()
        v10_client.close()
    finally:
        code = miner.stop(signal.SIGTERM)
    assert code == 0
    assert "Supervising 2 workers" in "".join(miner.seen)


def test_a_rate_limit_is_one_budget_across_workers(tmp_path, hotkeys, wallets_dir):
    """Each request on a new connection, reaching both workers: still only `requests` are served."""
    from bittensor import http_auth

    from .test_open_internet import send

    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running("axon.port=0", "axon.workers=2", "cache.ttl=0", "+blacklist.rules.rate_limit={requests: 3}",
                    f"wallet.path={wallets_dir}", f"network.metagraph_file={tmp_path}/mg.yaml", env=env, cwd=tmp_path)
    try:
        port = int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        miner.wait_for(r"on http://127\.0\.0\.1:(\d+)")
        served_by, statuses = set(), []
        receiver = hotkeys["dev-miner"].ss58_address
        # Which worker accepts a connection is the kernel's choice, often the same one many times
        # over: go on until both have answered (at least 12 requests, at most 300).
        for i in range(300):
            body = json.dumps({"roles": ["user"], "messages": [f"budget {i}"]}).encode()
            status, _, _ = send(port, http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting",
                                                     body=body, receiver_ss58=receiver), body)
            statuses.append(status)
            served_by.add(httpx.get(f"http://127.0.0.1:{port}/health").json()["pid"])
            if len(served_by) == 2 and i >= 11:
                break
    finally:
        assert miner.stop(signal.SIGTERM) == 0
    assert len(served_by) == 2  # both workers answered on fresh connections
    assert sorted(statuses) == [200] * 3 + [429] * (len(statuses) - 3), statuses
