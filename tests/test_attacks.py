"""Attacks on the HTTP surface and crashes: each bounded, answered with a reason, and survived."""

from __future__ import annotations

import os
import signal
import socket
import threading

import httpx

from declarative_miner.client import MinerClient

from .conftest import wait_until
from .test_open_internet import read_response
from .test_first_run import Running


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _healthy(miner) -> bool:
    return httpx.get(f"http://127.0.0.1:{miner.port}/health").status_code == 200


def test_oversized_headers_get_431_and_the_connection_closes(make_miner):
    """A head over axon.max_header_bytes: 431 with the reason, or (sent in pieces) h11's own 400."""
    with make_miner() as miner:
        big = _exchange(miner.port, b"POST /Prompting HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        many = _exchange(miner.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" +
                         b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
        assert _healthy(miner)
    for answer in (big, many):
        assert answer.startswith(b"HTTP/1.1 431") and b"exceed 32768 bytes" in answer


def test_a_body_trickled_slower_than_the_timeout_gets_408(make_miner, client_for):
    with make_miner("axon.request_timeout=1") as miner:
        client = client_for(miner)
        body = b'{"roles": ["user"], "messages": ["slow"]}'
        headers = "".join(f"{k}: {v}\r\n" for k, v in client.signed_headers(body).items())
        with socket.create_connection(("127.0.0.1", miner.port), timeout=10) as sock:
            sock.sendall(f"POST /Prompting HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
                         .encode() + body[:5])
            status, _, answer = read_response(sock)
        assert _healthy(miner)
    assert status == 408 and b"body not received within 1 s" in answer


def test_connections_that_never_send_a_request_are_closed(make_miner):
    with make_miner("axon.request_timeout=0.5") as miner:
        idle = [socket.create_connection(("127.0.0.1", miner.port), timeout=10) for _ in range(50)]
        assert all(sock.recv(1) == b"" for sock in idle)  # closed by the miner, not by us
        for sock in idle:
            sock.close()
        assert _healthy(miner)


def test_at_the_connection_bound_a_newcomer_takes_an_idle_connection_of_the_heaviest_holder(make_miner):
    """20 idle connections from 127.0.0.2 fill axon.max_connections: the validator at 127.0.0.1, which
    holds none, is served in place of the oldest of them; one more from 127.0.0.2 is closed at once."""
    from .test_open_internet import connect, read_response, request_bytes

    with make_miner("axon.max_connections=20", "axon.request_timeout=30") as miner:
        idle = [connect(miner.port) for _ in range(20)]
        validator = connect(miner.port, source="127.0.0.1")
        validator.sendall(request_bytes("GET", "/health", {}))
        served = read_response(validator)[0]
        oldest_closed = idle[0].recv(1) == b""
        another = connect(miner.port)  # the pool is full again: 19 idle and the validator's
        refused = another.recv(1) == b""
        for sock in [*idle, another, validator]:
            sock.close()
        wait_until(lambda: _healthy(miner))
    assert served == 200 and oldest_closed and refused


def test_kill_9_under_load_then_restart_opens_the_cache_intact(tmp_path, hotkeys, wallets_dir):
    import yaml

    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    args = ("axon.port=0", "axon.allowed_skew=0", f"wallet.path={wallets_dir}", f"network.metagraph_file={tmp_path}/mg.yaml",
            f"cache.directory={tmp_path}/cache")
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    miner = Running(*args, env=env, cwd=tmp_path)
    port = int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
    client = MinerClient(hotkeys["dev-validator"], port=port)
    assert client.prompt(["remembered"]).status == 200  # on disk once answered
    stop, served = threading.Event(), []

    def hammer(worker: int) -> None:
        hammering = MinerClient(hotkeys["dev-validator"], port=port)
        while not stop.is_set():
            try:
                served.append(hammering.prompt([f"load {worker}-{len(served)}"]).status)
            except httpx.HTTPError:
                break
        hammering.close()

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(served) >= 50)  # killed mid-load, with writes in flight
    miner.stop(signal.SIGKILL)
    stop.set()
    for worker in workers:
        worker.join(30)
    client.close()
    restarted = Running(*args, env=env, cwd=tmp_path)
    try:
        port = int(restarted.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        client = MinerClient(hotkeys["dev-validator"], port=port)
        remembered = client.prompt(["remembered"])
        assert (remembered.status, remembered.error) == (409, "duplicate prompt")  # the claim survived the crash
        assert client.prompt(["after the crash"]).status == 200
        client.close()
    finally:
        assert restarted.stop() == 0
