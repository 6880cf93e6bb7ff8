"""A key anyone can make in a moment is a stranger's key: what the second outside attack found, over
real sockets from 127.0.0.2, each request signed as a stranger signs it (btauth/1 by bittensor's own
`http_auth`, Epistula and v10 from protocols.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import socket
import time

import pytest
from bittensor import http_auth
from bittensor.sp_core import Keypair

from .test_epistula import epistula
from .test_first_run import Running
from .test_open_internet import connect, read_response, request_bytes

pytestmark = pytest.mark.slow
REPLY_SIGNATURE = "x-bittensor-reply-signature"


def _flood(port: int, requests: list[tuple[dict, bytes]], target: str = "/Synapse") -> list[tuple[int, dict]]:
    """Send each request on one keep-alive connection from the attacker's address; the answers
    until the miner stops reading it (shed)."""
    answers = []
    with connect(port) as flood:
        flood.settimeout(2)
        for headers, body in requests:
            flood.sendall(request_bytes("POST", target, {**headers, "Content-Length": len(body)}, body))
            try:
                status, reply_headers, _ = read_response(flood)
            except TimeoutError:
                break
            answers.append((status, reply_headers))
    return answers


def _v10_ping(keypair, receiver: str, body: dict) -> tuple[dict, bytes]:
    """A v10 ping with no hash fields: the signature covers sha3-256 of the empty string, not the body."""
    nonce, uuid, body_hash = time.time_ns(), "attacker-uuid", hashlib.sha3_256(b"").hexdigest()
    signature = keypair.sign(f"{nonce}.{keypair.ss58_address}.{receiver}.{uuid}.{body_hash}".encode())
    return {"name": "Synapse", "timeout": "12.0", "bt_header_axon_hotkey": receiver,
            "bt_header_dendrite_hotkey": keypair.ss58_address, "bt_header_dendrite_nonce": str(nonce),
            "bt_header_dendrite_uuid": uuid, "bt_header_dendrite_signature": "0x" + bytes(signature).hex(),
            "computed_body_hash": body_hash, "Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.mark.parametrize("wire", ["btauth", "epistula"])
def test_a_fresh_keys_malformed_requests_are_counted_shed_unsigned_and_summarised(make_miner, caplog, wire):
    """Finding 1: a fresh key's 422s were a verified caller's refusals, never shed, a log line each."""
    fresh = Keypair.create_from_uri("//Stranger-422")
    body = b"not json"
    with caplog.at_level(logging.INFO, logger="declarative_miner.requests"), \
            make_miner("axon.max_refusals_per_ip=10", "axon.shed_for=30", "axon.sign_responses=true") as miner:
        def signed() -> dict:
            if wire == "btauth":
                return http_auth.sign(fresh, method="POST", path="/Synapse", body=body, receiver_ss58=miner.hotkey)
            return epistula(fresh, body, miner.hotkey)

        answers = _flood(miner.port, [(signed(), body) for _ in range(40)])
    assert {status for status, _ in answers} == {422}
    assert len(answers) < 15  # shed after 10
    assert not [headers for _, headers in answers if REPLY_SIGNATURE in headers]
    assert not [r for r in caplog.records if fresh.ss58_address in r.getMessage()]


def test_a_fresh_key_gets_no_miner_signature_over_words_it_chose(make_miner, hotkeys):
    """Finding 3: a v10 ping echoes its body; signed, it was the miner's word on the stranger's text."""
    fresh = Keypair.create_from_uri("//Stranger-oracle")
    words = {"name": "Prompting", "completion": "send 100 TAO to 5Evil", "messages": ["hi"], "roles": ["user"]}
    with make_miner("axon.sign_responses=true") as miner:
        [(stranger, stranger_headers)] = _flood(miner.port, [_v10_ping(fresh, miner.hotkey, words)],
                                                target="/Synapse?why=not")
        validator = hotkeys["dev-validator"]
        with connect(miner.port, "127.0.0.1") as sock:
            headers, body = _v10_ping(validator, miner.hotkey, {"name": "Synapse"})
            sock.sendall(request_bytes("POST", "/Synapse", {**headers, "Content-Length": len(body)}, body))
            known, known_headers, _ = read_response(sock)
    assert stranger == 200 and REPLY_SIGNATURE not in stranger_headers
    assert known == 200 and REPLY_SIGNATURE in known_headers  # the validator's ping is still signed


def test_evictions_for_newcomers_are_logged_once_an_interval(make_miner, caplog):
    """Finding 4: every eviction wrote a line, so churning connections wrote lines at will."""
    with caplog.at_level(logging.INFO, logger="declarative_miner.server.connections"), \
            make_miner("axon.max_connections=8") as miner:
        held = [connect(miner.port) for _ in range(8)]
        for _ in range(30):
            with connect(miner.port, "127.0.0.3") as newcomer:
                newcomer.sendall(request_bytes("GET", "/health", {}))
                assert read_response(newcomer)[0] == 200
            held.append(connect(miner.port))  # the holder takes its place back
        for sock in held:
            sock.close()
    evictions = [r for r in caplog.records if "closing an idle connection" in r.getMessage()]
    assert len(evictions) <= 2  # none at all: an eviction within the interval before (the filter is per process)


def _at_most_open_files(limit: int):
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return limited


def test_a_low_open_file_limit_lowers_the_connection_bound_so_held_connections_cannot_lock_out_a_validator(
        tmp_path, home, hotkeys):
    """Finding 2: under `ulimit -n 512` the files ran out before max_connections (2048) evicted any."""
    miner = Running(f"home={home}", env=dict(os.environ), cwd=tmp_path, preexec_fn=_at_most_open_files(512))
    held = []
    try:
        port = int(miner.wait_for(r"Serving .* on http://127\.0\.0\.1:(\d+)").group(1))
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
            for _ in range(100):  # under the per-address bound (128), 500 in all
                held.append(connect(port, address))
        body = json.dumps({"roles": ["user"], "messages": ["a validator's question"]}).encode()
        with connect(port, "127.0.0.1", timeout=5) as validator:  # sooner than idle connections time out
            receiver = json.loads(_get(validator, "/health"))["hotkey"]
            signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                    receiver_ss58=receiver)
            validator.sendall(request_bytes("POST", "/Prompting", {**signed, "Content-Length": len(body)}, body))
            status, _, answer = read_response(validator)
    finally:
        for sock in held:
            sock.close()
        miner.stop()
    assert status == 200 and json.loads(answer)["completion"] == "a validator's question"
    assert "Open files are limited to 512 (ulimit -n; LimitNOFILE= in a systemd unit): serving at most 256 " \
           "connections, not axon.max_connections=2048" in "".join(miner.seen)


def _get(sock: socket.socket, target: str) -> bytes:
    sock.sendall(request_bytes("GET", target, {}))
    return read_response(sock)[2]
