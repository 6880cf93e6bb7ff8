"""The attacks of "Hold the open internet", each over a real socket against a real uvicorn server.

The attacker's sockets are bound to 127.0.0.2 (loopback is a whole /8): an address that is not the
validator's (127.0.0.1). Requests are signed as strangers sign them, from the specs in
protocols.md (v10 §1.4, btauth/1 §2 through bittensor's own `http_auth`), never with this
project's signer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from bittensor import http_auth

from . import prompts
from .conftest import gauge, on_free_ports, wait_until
from .test_first_run import Running

ATTACKER = "127.0.0.2"
ROOT = Path(__file__).resolve().parents[1]


def connect(port: int, source: str = ATTACKER, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def request_bytes(method: str, target: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: miner"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def closed_by_server_within(sock: socket.socket, seconds: float, trickle: bytes = b"x") -> bool:
    """Keep trickling bytes, as a slowloris does; True once the server has closed the connection."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            sock.sendall(trickle)
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def v10_request(keypair, receiver: str, messages: list[str], *, nonce: int, uuid: str = "5a5b-stranger",
                version: str | None = "10005000") -> tuple[dict, bytes]:
    """A v10 Dendrite's request, written from protocols.md §1.2-1.4 (not this project's signer)."""
    inner = "".join(hashlib.sha3_256(str(messages).encode()).hexdigest() for _ in ("messages",))
    body_hash = hashlib.sha3_256(inner.encode()).hexdigest()
    signature = keypair.sign(f"{nonce}.{keypair.ss58_address}.{receiver}.{uuid}.{body_hash}".encode())
    headers = {"name": "Prompting", "timeout": "12.0", "bt_header_axon_hotkey": receiver,
               "bt_header_dendrite_hotkey": keypair.ss58_address, "bt_header_dendrite_nonce": str(nonce),
               "bt_header_dendrite_uuid": uuid, "bt_header_dendrite_signature": "0x" + bytes(signature).hex(),
               "computed_body_hash": body_hash, "Content-Type": "application/json"}
    if version is not None:
        headers["bt_header_dendrite_version"] = version
    body = json.dumps({"name": "Prompting", "roles": ["user"] * len(messages), "messages": messages}).encode()
    return headers, body


def send(port: int, headers: dict, body: bytes, target: str = "/Prompting", source: str = "127.0.0.1"):
    with connect(port, source) as sock:
        sock.sendall(request_bytes("POST", target, {**headers, "Content-Length": len(body)}, body))
        return read_response(sock)


# 1. v10 freshness never comes from an unsigned header -----------------------------------------

def test_an_hour_old_v10_request_is_stale_whatever_its_unsigned_headers_say(make_miner, hotkeys):
    with make_miner("cache.ttl=0") as miner:
        old = time.time_ns() - 3600 * 10**9
        for version in ("0", None, "10005000"):
            headers, body = v10_request(hotkeys["dev-validator"], miner.hotkey, ["an hour ago"], nonce=old,
                                        version=version, uuid=f"fresh-{version}")
            status, _, answer = send(miner.port, {**headers, "timeout": "100000"}, body)
            assert status == 401 and b"stale request" in answer, answer


def test_a_v10_replay_after_the_window_is_refused_as_stale(make_miner, hotkeys):
    with make_miner("cache.ttl=0", "axon.max_age=1") as miner:
        nonce = time.time_ns() - 700_000_000  # 0.7 s old: fresh for 0.3 s more
        headers, body = v10_request(hotkeys["dev-validator"], miner.hotkey, ["replay me later"], nonce=nonce)
        assert send(miner.port, headers, body)[0] == 200
        wait_until(lambda: time.time_ns() > nonce + 1_100_000_000)  # past the window: the store may forget
        status, _, answer = send(miner.port, {**headers, "bt_header_dendrite_version": "0"}, body)
    assert status == 401 and b"stale request" in answer, answer


# 2. Every connection ends within a bound ------------------------------------------------------

@pytest.mark.parametrize("method, target, claim, length", [("GET", "/health", None, 100_000_000),
                                                           ("POST", "/Prompting", "stranger", 1_000_000)])
def test_an_answered_request_whose_body_is_never_read_closes_the_connection(make_miner, hotkeys, method, target,
                                                                            claim, length):
    with make_miner() as miner, connect(miner.port) as sock:
        headers = {"Content-Length": str(length)}
        if claim:
            headers.update({"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkeys[claim].ss58_address})
        sock.sendall(request_bytes(method, target, headers, b"x"))
        status, response_headers, _ = read_response(sock)
        assert status == (200 if method == "GET" else 403)
        # Said in the answer (RFC 9112 §9.6): a keep-alive client would send its next request into
        # the closing socket and see "server disconnected" where it should have opened a new one.
        assert response_headers.get("connection") == "close"
        assert closed_by_server_within(sock, 5)


def test_a_client_expecting_100_continue_gets_it_then_its_answer(make_miner, hotkeys):
    # curl asks with `Expect: 100-continue` for bodies over 1 KB, and sends the body once told to.
    with make_miner("cache.ttl=0") as miner, connect(miner.port, source="127.0.0.1") as sock:
        body = json.dumps({"roles": ["user"], "messages": ["long " * 400]}).encode()
        headers = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                 receiver_ss58=miner.hotkey)
        sock.sendall(request_bytes("POST", "/Prompting", {**headers, "Content-Length": len(body),
                                                          "Expect": "100-continue"}))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = read_response(sock)
    assert (status, json.loads(answer)["completion"]) == (200, "long " * 400)


def test_a_keep_alive_connection_trickling_blank_lines_is_closed(make_miner):
    with make_miner("axon.request_timeout=1") as miner, connect(miner.port) as sock:
        sock.sendall(request_bytes("GET", "/health", {}))
        assert read_response(sock)[0] == 200
        assert closed_by_server_within(sock, 5, trickle=b"\r\n")


def test_a_request_served_past_the_header_timeout_keeps_its_connection_and_idle_then_ends_it(make_miner, hotkeys):
    # One clock a connection bounds the wait for headers (server/http.py). Here it runs out while the
    # request is being answered: that is no late client. The connection serves a second request,
    # then the idle keep-alive is bounded again.
    with make_miner("axon.request_timeout=2", "prompt._target_=tests.prompts.slow", "+prompt.seconds=1.5") as miner, \
            connect(miner.port, source="127.0.0.1") as sock:
        body = b'{"roles": ["user"], "messages": ["answered past the header timeout"]}'
        signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                receiver_ss58=miner.hotkey)
        time.sleep(1.0)  # the client idles half the header timeout before asking
        sock.sendall(request_bytes("POST", "/Prompting", {**signed, "Content-Length": len(body)}, body))
        status, _, answer = read_response(sock)  # 1.5 s of work: the clock ran out meanwhile
        assert status == 200, answer
        sock.sendall(request_bytes("GET", "/health", {}))
        assert read_response(sock)[0] == 200
        assert closed_by_server_within(sock, 5, trickle=b"")


def test_held_connections_beyond_the_connection_bound_leave_validators_served(make_miner, client_for):
    with make_miner("axon.max_connections=20") as miner:
        held = [connect(miner.port) for _ in range(25)]
        for sock in held:
            sock.sendall(request_bytes("GET", "/health", {"Content-Length": "100000000"}, b"x"))
        wait_until(lambda: all(closed_by_server_within(sock, 0.3) for sock in held), timeout=30)
        # Each lingers at most LINGER (1 s) after its answer, then the validator is served.
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{miner.port}/health").status_code == 200, timeout=5)
        reply = client_for(miner).prompt(["served despite the held connections"])
        for sock in held:
            sock.close()
    assert reply.status == 200


def test_idle_and_slowloris_connections_from_one_address_cannot_use_up_the_connection_bound(make_miner, client_for):
    with make_miner("axon.max_connections=20", "axon.max_connections_per_ip=8", "axon.request_timeout=30") as miner:
        idle = [connect(miner.port) for _ in range(10)]
        slow = [connect(miner.port) for _ in range(10)]
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        refused = [sock for sock in idle + slow if closed_by_server_within(sock, 0.5, trickle=b"")]
        reply = client_for(miner).prompt(["served despite idle and slow connections"])
        for sock in idle + slow:
            sock.close()
    assert len(refused) == 12  # 8 of the 20 held from 127.0.0.2, the rest closed at once
    assert reply.status == 200, reply.reason


# 3. Forged claims of a validator's hotkey cannot crowd it out ---------------------------------

def test_300_forged_validator_claims_from_one_address_leave_the_validator_served(make_miner, client_for, hotkeys):
    with make_miner("axon.request_timeout=30") as miner:
        claim = {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkeys["dev-validator"].ss58_address,
                 "X-Bittensor-Nonce": str(time.time_ns()), "X-Bittensor-Signature": "0x" + "00" * 64,
                 "Content-Length": "1000"}
        forged = [connect(miner.port) for _ in range(300)]
        for sock in forged:
            sock.sendall(request_bytes("POST", "/Prompting", claim, b"0123456789"))
        refused = read_response(forged[100])  # held: the first 16; closed at once: those past 128 connections
        reply = client_for(miner).prompt(["served despite 300 forged claims"])
        for sock in forged:
            sock.close()
    assert (refused[0], b"unverified requests from 127.0.0.2" in refused[2]) == (429, True), refused
    assert reply.status == 200, reply.reason


# 4. A forged v10 request costs a signature check, never a parse --------------------------------

def test_a_forged_v10_request_is_refused_before_its_body_is_parsed(make_miner, hotkeys):
    with make_miner() as miner:
        headers, _ = v10_request(hotkeys["stranger"], miner.hotkey, ["x"], nonce=time.time_ns())
        forged = {**headers, "bt_header_dendrite_hotkey": hotkeys["dev-validator"].ss58_address}
        status, _, answer = send(miner.port, forged, b"[" + b'{"a": 1},' * 100_000 + b"not json", source=ATTACKER)
    assert status == 401 and b"signature mismatch" in answer, answer  # 422 if the body had been parsed


# 5. btauth/1 replays across a restart ---------------------------------------------------------

@pytest.fixture
def served_process(tmp_path, hotkeys, wallets_dir):
    (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}

    def start(*overrides: str) -> tuple[Running, int]:
        miner = Running("axon.port=0", f"wallet.path={wallets_dir}", f"network.metagraph_file={tmp_path}/mg.yaml",
                        *overrides, env=env, cwd=tmp_path)
        return miner, int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
    return start


@pytest.mark.parametrize("store", ["disk", "memory"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_btauth_request_replayed_across_a_restart_is_refused(served_process, hotkeys, stop, store):
    miner, port = served_process("cache.ttl=0", "axon.max_age=60", f"state.store={store}")
    receiver = hotkeys["dev-miner"].ss58_address
    body = json.dumps({"roles": ["user"], "messages": ["once, restart or not"]}).encode()

    def fresh() -> dict:
        return http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                              receiver_ss58=receiver)
    wait_until(lambda: send(port, fresh(), body)[0] == 200)  # in memory: once allowed_skew past the start
    signed = fresh()
    try:
        assert send(port, signed, body)[0] == 200
    finally:
        miner.stop(stop)
    again, port = served_process("cache.ttl=0", "axon.max_age=60", f"state.store={store}")
    try:
        status, _, answer = send(port, signed, body, source=ATTACKER)
        # Honest requests signed now are served (in memory: once allowed_skew past the start).
        wait_until(lambda: send(port, fresh(), body)[0] == 200)
    finally:
        assert again.stop() == 0
    # On disk the store outlived the process; in memory nothing did, so what was signed before the start is refused.
    assert status == 401 and (b"ReplayedRequest" if store == "disk" else b"signed before the miner started") \
        in answer, answer


# 6. The caller leaves, the work stops ---------------------------------------------------------

@pytest.mark.parametrize("route, target", [("/Prompting", "tests.prompts.waits_forever"),
                                           ("/Prompting", "tests.prompts.yields_forever"),
                                           ("/StreamPrompting", "tests.prompts.streams_then_waits")])
@pytest.mark.parametrize("wire", ["btauth", "v10"])
def test_a_caller_that_leaves_stops_its_prompt_and_frees_its_slot(make_miner, hotkeys, route, target, wire):
    message = f"leaving {route} {target} {wire}"
    with make_miner(f"prompt._target_={target}", "axon.max_concurrency=1", "cache.ttl=0",
                    "axon.request_timeout=60") as miner:
        if wire == "v10":
            headers, body = v10_request(hotkeys["dev-validator"], miner.hotkey, [message], nonce=time.time_ns())
        else:
            body = json.dumps({"roles": ["user"], "messages": [message]}).encode()
            headers = http_auth.sign(hotkeys["dev-validator"], method="POST", path=route, body=body,
                                     receiver_ss58=miner.hotkey)
        with connect(miner.port, "127.0.0.1") as sock:
            sock.sendall(request_bytes("POST", route, {**headers, "Content-Length": len(body)}, body))
            if route == "/StreamPrompting":
                seen = b""
                while b"first" not in seen:  # the head and the first chunk may come apart
                    seen += sock.recv(65536)
            else:
                wait_until(lambda: gauge(miner, "miner_inflight") == 1)
        wait_until(lambda: message in prompts.stopped)
        wait_until(lambda: gauge(miner, "miner_inflight") == 0)
        counted = gauge(miner, "miner_requests_total", route=route, status="499", wire_format=wire)
    assert counted == 1


# 7. A plain prompt that never returns ----------------------------------------------------------

def test_a_stuck_plain_prompt_shows_in_the_metrics_and_sigterm_still_exits(served_process, hotkeys):
    miner, port = served_process("prompt._target_=tests.prompts.never_returns", "axon.max_concurrency=1",
                                 "axon.request_timeout=1", "cache.ttl=0")
    receiver = hotkeys["dev-miner"].ss58_address

    def prompt(text: str):
        body = json.dumps({"roles": ["user"], "messages": [text]}).encode()
        return send(port, http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                         receiver_ss58=receiver), body)
    try:
        first, second = prompt("stuck"), prompt("behind the stuck one")
        metrics = int(re.search(r"Prometheus at http://127\.0\.0\.1:(\d+)", "".join(miner.seen)).group(1))
        overrunning = gauge(metrics, "miner_overrunning_prompts")
        miner.proc.send_signal(signal.SIGTERM)
        code = miner.proc.wait(timeout=15)  # the drain bound (1 s) plus start-up slack, not forever
    finally:
        miner.stop(signal.SIGKILL)
    assert first[0] == 504 and second[0] == 504
    assert b"1 held by prompts still running past their deadline" in second[2], second
    assert overrunning == 1
    assert code == 0


# 10. The miner's state is the operator's alone --------------------------------------------------

def test_state_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(home)}
    miner = subprocess.Popen([sys.executable, "-m", "declarative_miner", "axon.port=0"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: os.umask(0o022))
    for line in miner.stdout:
        if "Serving" in line:
            break
    miner.send_signal(signal.SIGTERM)
    miner.communicate(timeout=30)
    paths = [home, *home.rglob("*")]
    assert len(paths) > 8  # wallets, metagraph, cache, replay store
    loose = [f"{p.relative_to(tmp_path)} {oct(p.stat().st_mode & 0o777)}" for p in paths
             if p.stat().st_mode & 0o077 or (p.is_dir() and p.stat().st_mode & 0o700 != 0o700)]
    assert not loose, loose


# 11. The smaller ones ----------------------------------------------------------------------------

def test_transfer_encodings_other_than_chunked_get_400(make_miner):
    """h11 reads a body as chunked only when chunked is the one coding (RFC 9112 §6.3): 400, closed."""
    with make_miner() as miner, connect(miner.port) as sock:
        sock.sendall(request_bytes("POST", "/Prompting", {"Transfer-Encoding": "gzip, chunked"}, b"0\r\n\r\n"))
        status, headers, _ = read_response(sock)
    assert status == 400 and headers["connection"] == "close"


def test_an_absolute_form_target_is_no_route_not_a_verified_path(make_miner, hotkeys):
    """btauth/1 signs the target as sent: `http://x/Prompting` is never read as `/Prompting`."""
    with make_miner() as miner:
        body = b'{"roles": ["user"], "messages": ["absolute"]}'
        signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                receiver_ss58=miner.hotkey)
        status, _, answer = send(miner.port, signed, body, target="http://x/Prompting")
    assert status == 404 and b"no route POST http://x/Prompting" in answer


def test_validate_creates_nothing(tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "declarative_miner",
                             *on_free_ports(["mode=validate", "wallet.hotkey=nosuch"])],
                            env={**os.environ, "DECLARATIVE_MINER_HOME": str(home)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "dev-miner/nosuch -> not created yet" in result.stdout and "mode=validate creates nothing" in result.stdout
    assert not (home / "dev" / "wallets").exists()


def test_a_nonce_of_non_ascii_digits_is_a_401_not_a_500(make_miner, hotkeys):
    """`"²".isdigit()` is true but `int("²")` fails: the byte \\xb2 (obs-text) in a nonce header."""
    with make_miner() as miner, connect(miner.port) as sock:
        sock.sendall(b"POST /Prompting HTTP/1.1\r\nHost: x\r\nX-Bittensor-Version: 1\r\nX-Bittensor-Hotkey: "
                     + hotkeys["dev-validator"].ss58_address.encode() + b"\r\nX-Bittensor-Nonce: \xb2\r\n"
                     b"X-Bittensor-Signature: 0x00\r\nContent-Length: 2\r\n\r\n{}")
        status, _, answer = read_response(sock)
    assert status == 401 and b"X-Bittensor-Nonce must be a decimal number" in answer, answer


def test_a_v10_refusal_quoting_a_decoded_nul_in_the_path_is_still_answered(make_miner, hotkeys):
    """Found by the raw fuzzing: `/%00` decodes to NUL, the 404's reason quotes the path, and the v10
    status header carried it, which uvicorn refuses to send: the caller got no answer at all."""
    with make_miner() as miner, connect(miner.port) as sock:
        sock.sendall(request_bytes("POST", "/%00", {"bt_header_dendrite_hotkey": hotkeys["stranger"].ss58_address,
                                                    "Content-Length": "2"}, b"{}"))
        status, headers, answer = read_response(sock)
    assert status == 404 and b"no route POST /" in answer
    assert headers["bt_header_axon_status_message"].startswith("not found: no route POST /?")
