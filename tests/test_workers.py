"""Several worker processes on one port (gunicorn supervises them): they share the state store, a
worker killed at any moment is replaced and the miner goes on serving, a worker that cannot start
stops the miner with its reason, and the workers end with their supervisor."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from bittensor import http_auth
from bittensor.sp_core import Keypair

from declarative_miner.auth import v10
from declarative_miner.client import MinerClient
from declarative_miner.processes import alive

from .conftest import wait_until
from .test_first_run import Running
from .test_open_internet import ATTACKER, connect, read_response, request_bytes, send
from .test_shedding import UNSIGNED

pytestmark = pytest.mark.slow
SERVING = r"on http://127\.0\.0\.1:(\d+) .*process (\d+)"


def _start(tmp_path, hotkeys, wallets_dir, *overrides: str) -> tuple[Running, int]:
    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running("axon.port=0", "axon.workers=2", f"wallet.path={wallets_dir}",
                    f"network.metagraph_file={tmp_path}/mg.yaml", *overrides, env=env, cwd=tmp_path)
    port = int(miner.wait_for(SERVING).group(1))
    miner.wait_for(SERVING)  # the second worker is up too
    return miner, port


def _workers(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _signed(keypair, receiver: str, words: str) -> bytes:
    body = json.dumps({"roles": ["user"], "messages": [words]}).encode()
    headers = http_auth.sign(keypair, method="POST", path="/Prompting", body=body, receiver_ss58=receiver)
    return request_bytes("POST", "/Prompting", {**headers, "Content-Length": len(body)}, body)


def _one_connection_per_worker(port: int, probe, receiver: str, source: str = ATTACKER) -> list:
    """Keep-alive connections, one held by each worker (the process_id prompt names who answers)."""
    held: dict[str, object] = {}
    for i in range(300):  # the kernel picks the worker: connect until both hold one
        sock = connect(port, source)
        sock.sendall(_signed(probe(i), receiver, f"which {i}"))
        pid = json.loads(read_response(sock)[2])["completion"].split()[0]
        if pid in held:
            sock.close()
        else:
            held[pid] = sock
        if len(held) == 2:
            return list(held.values())
    raise AssertionError("the kernel gave every connection to one worker")


def test_two_workers_share_the_port_the_cache_and_the_replay_store(tmp_path, hotkeys, wallets_dir):
    miner, port = _start(tmp_path, hotkeys, wallets_dir)
    try:
        client = MinerClient(hotkeys["dev-validator"], port=port)
        body = json.dumps({"roles": ["user"], "messages": ["once"]}).encode()
        headers = {**client.signed_headers(body), "connection": "close"}  # a new connection each time
        assert client.send(body, headers).status == 200
        replays = [client.send(body, headers) for _ in range(12)]
        assert {(r.status, r.reason.split(":")[0]) for r in replays} == {(401, "ReplayedRequest")}

        v10_headers, v10_body = v10.sign(hotkeys["dev-validator"], receiver=client.miner_hotkey(), roles=["user"],
                                         messages=["v10 once"], uuid=client.uuid)
        v10_headers["connection"] = "close"
        assert client.send(v10_body, v10_headers).status == 200
        assert {client.send(v10_body, v10_headers).status for _ in range(12)} == {401}

        fresh = [MinerClient(hotkeys["dev-validator"], port=port) for _ in range(6)]  # separate connections
        duplicates = [c.prompt(["shared cache"]) for c in fresh]
        for c in fresh + [client]:
            c.close()
        assert sorted(r.status for r in duplicates) == [200] + [409] * 5
    finally:
        code = miner.stop(signal.SIGTERM)
    assert code == 0
    assert "Supervising 2 workers" in "".join(miner.seen)


def test_a_rate_limit_is_one_budget_across_workers(tmp_path, hotkeys, wallets_dir):
    """A validator's requests alternate between a connection on each worker: 3 are served, not 6."""
    miner, port = _start(tmp_path, hotkeys, wallets_dir, "blacklist=open", "cache.ttl=0",
                         "+blacklist.rules.rate_limit={requests: 3}", "prompt._target_=tests.prompts.process_id")
    receiver = hotkeys["dev-miner"].ss58_address
    try:  # each probe signs with a key of its own: its own budget
        socks = _one_connection_per_worker(port, lambda i: Keypair.create_from_uri(f"//probe{i}"), receiver,
                                           source="127.0.0.1")
        statuses = []
        for i in range(12):
            socks[i % 2].sendall(_signed(hotkeys["dev-validator"], receiver, f"budget {i}"))
            statuses.append(read_response(socks[i % 2])[0])
        for sock in socks:
            sock.close()
    finally:
        assert miner.stop(signal.SIGTERM) == 0
    assert statuses == [200] * 3 + [429] * 9, statuses
    assert "".join(miner.seen).count("Finished server process") == 2  # each worker says it exits, without gunicorn#3013
    assert "Error while closing socket" not in "".join(miner.seen)


def test_the_replay_store_outlives_a_killed_worker_and_the_whole_miner(tmp_path, hotkeys, wallets_dir):
    body = json.dumps({"roles": ["user"], "messages": ["once, whatever happens to the workers"]}).encode()
    signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                            receiver_ss58=hotkeys["dev-miner"].ss58_address)

    def replays(port: int) -> set:  # each on a new connection, so both workers get some
        return {(status, b"ReplayedRequest" in answer) for status, _, answer in
                (send(port, signed, body, source=ATTACKER) for _ in range(12))}

    miner, port = _start(tmp_path, hotkeys, wallets_dir, "cache.ttl=0", "axon.max_age=60")
    try:
        assert send(port, signed, body)[0] == 200
        killed = _workers(miner.proc.pid)[0]
        os.kill(killed, signal.SIGKILL)
        miner.wait_for(rf"Worker \(pid:{killed}\) was sent SIGKILL")
        miner.wait_for(SERVING)  # its replacement serves
        assert replays(port) == {(401, True)}
        workers = _workers(miner.proc.pid)
        miner.proc.kill()  # a crash of the whole miner: the supervisor and its workers, no clean stop
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        miner.stop()
    miner, port = _start(tmp_path, hotkeys, wallets_dir, "cache.ttl=0", "axon.max_age=60")
    try:
        assert replays(port) == {(401, True)}
    finally:
        assert miner.stop(signal.SIGTERM) == 0


def test_workers_killed_under_load_are_replaced_and_the_next_request_after_each_is_served(
        tmp_path, hotkeys, wallets_dir):
    """Keep-alive validators keep asking while a worker is SIGKILLed at a random moment, 6 times (the
    OOM killer's way). Requests on the killed worker fail; once its replacement says it serves, every
    client's next request is answered 200. `benchmarks/kills.py` does the same 300 times."""
    rng = random.Random(11)
    miner, port = _start(tmp_path, hotkeys, wallets_dir, "cache.ttl=0")
    stop, errors, answered = threading.Event(), [], []
    lock = threading.Lock()

    def validator(n: int) -> None:
        client = MinerClient(hotkeys["dev-validator"], port=port, timeout=30)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                reply = client.prompt([f"validator {n} asks {i}"])
                with lock:
                    answered.append((n, reply.status))
            except httpx.HTTPError as exc:  # it was on the killed worker
                with lock:
                    errors.append(exc)
        client.close()

    threads = [threading.Thread(target=validator, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for kill in range(6):
            wait_until(lambda: len(answered) >= 20 * (kill + 1))
            threading.Event().wait(rng.uniform(0, 0.05))  # a random moment under load (not a synchronisation)
            victim = rng.choice(_workers(miner.proc.pid))
            os.kill(victim, signal.SIGKILL)
            booted = int(miner.wait_for(r"Booting worker with pid: (\d+)").group(1))
            miner.wait_for(rf"on http://127\.0\.0\.1:\d+ .*process {booted}\b")  # the replacement serves
            with lock:
                mark = len(answered)
            wait_until(lambda: {n for n, _ in answered[mark:]} == {0, 1, 2, 3})
            with lock:
                after = answered[mark:]
            firsts = {n: status for n, status in reversed(after)}  # each client's first answer since
            assert set(firsts.values()) == {200}, after
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        code = miner.stop(signal.SIGTERM)
    assert code == 0
    assert {status for _, status in answered} == {200}
    assert len(errors) <= 6 * 4  # at most the requests in flight on each killed worker


def test_a_worker_that_cannot_start_stops_the_miner_with_exit_2_and_its_reason(tmp_path, hotkeys, wallets_dir):
    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": []}))
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running("axon.port=0", "axon.workers=2", f"wallet.path={wallets_dir}",
                    f"network.metagraph_file={tmp_path}/mg.yaml", "prompt._target_=tests.prompts.FailsToStartInWorkers",
                    env=env, cwd=tmp_path)
    code = miner.proc.wait(60)
    miner.stop()
    log = "".join(miner.seen) + "".join(iter(lambda: miner.lines.get() if not miner.lines.empty() else "", ""))
    assert code == 2, log
    assert "axon.workers: a worker could not start" in log
    assert "cannot open the model server connection in this worker" in log
    assert log.count("Booting worker") <= 2  # stopped at once, never respawned


def test_workers_end_with_their_supervisor_even_after_kill_9(tmp_path, hotkeys, wallets_dir):
    """Orphaned workers would go on serving the port unsupervised, and a restart could not bind it."""
    miner, port = _start(tmp_path, hotkeys, wallets_dir)
    workers = _workers(miner.proc.pid)
    assert len(workers) == 2
    miner.proc.kill()
    miner.proc.wait()
    try:
        wait_until(lambda: not any(alive(pid) for pid in workers))
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)  # they hold the log pipe: stop() would wait for them
        miner.stop()
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    again = Running(f"axon.port={port}", f"wallet.path={wallets_dir}", env=env, cwd=tmp_path)
    try:
        again.wait_for(rf"on http://127\.0\.0\.1:{port}")  # the port is free again
    finally:
        assert again.stop(signal.SIGTERM) == 0


def test_an_address_flooding_two_workers_is_shed_at_the_limit_not_twice_it(tmp_path, hotkeys, wallets_dir):
    """Refusals made by either worker count toward one limit: a flood alternating between a
    connection on each worker is shed after `max_refusals_per_ip` of them, where counting in each
    worker alone would answer twice as many."""
    miner, port = _start(tmp_path, hotkeys, wallets_dir, "axon.max_refusals_per_ip=20", "axon.shed_for=30",
                         "cache.ttl=0", "prompt._target_=tests.prompts.process_id")
    try:  # the probes are the validator's, signed: a verified caller's requests never count
        socks = _one_connection_per_worker(port, lambda i: hotkeys["dev-validator"], hotkeys["dev-miner"].ss58_address)
        answered = 0
        for turn in range(60):
            sock = socks[turn % 2]
            sock.sendall(UNSIGNED)
            sock.settimeout(2.0)
            try:
                assert read_response(sock)[0] == 401
            except TimeoutError:  # shed: the worker no longer reads this address
                break
            answered += 1
    finally:
        for sock in socks:
            sock.close()
        code = miner.stop(signal.SIGTERM)
    # The 21st refusal sheds the address in the worker that made it; the other worker learns it at
    # its own next refusal, which it still answers: 22, and one more for each 50 ms the flood took
    # (the limit is a rate). Counted apart, the two workers answered 42.
    assert 20 < answered < 30, answered
    assert code == 0
