"""A validator is always served: what the HTTP layer and admission owe it while strangers misbehave.

Raw bytes over real sockets to a real uvicorn server; the attackers are 127.0.0.2 and up, the
validator 127.0.0.1 (or, behind a proxy, the address the proxy names). Requests are signed with
bittensor's own `http_auth`, as a bittensor 11 validator signs them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from bittensor import http_auth

from . import prompts
from .conftest import gauge, wait_until
from .test_open_internet import connect, read_response, request_bytes

ALLOWED = "+blacklist.rules.allow_ips={networks: [10.1.2.3/32]}"  # an address no socket here has


def _signed(hotkeys, miner, words: str, route: str = "/Prompting") -> tuple[dict, bytes]:
    body = json.dumps({"roles": ["user"], "messages": [words]}).encode()
    return http_auth.sign(hotkeys["dev-validator"], method="POST", path=route, body=body,
                          receiver_ss58=miner.hotkey), body


def _chunked(target: str, headers: dict, body: bytes, trailers: dict) -> bytes:
    """A chunked request whose trailer section carries `trailers` (RFC 9112 §7.1.2)."""
    head = request_bytes("POST", target, {**headers, "Transfer-Encoding": "chunked"})
    tail = "".join(f"{k}: {v}\r\n" for k, v in trailers.items()).encode()
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n" + tail + b"\r\n"


def _ask_raw(port: int, data: bytes, source: str) -> tuple[int, str]:
    with connect(port, source) as sock:
        sock.sendall(data)
        status, _, answer = read_response(sock)
    return status, json.loads(answer).get("reason", "") if answer.startswith(b"{") else answer.decode()


# 1. Trailers never decide a request -------------------------------------------------------------

def _trailer_attacks(hotkeys, miner) -> dict:
    """Two requests whose trailers say what their headers do not: the caller's address, and a
    validator's signature under a header block with none."""
    headers, body = _signed(hotkeys, miner, "a trailer names the allowed address")
    address = _chunked("/Prompting", {**headers, "X-Forwarded-For": "10.6.6.6"}, body, {"X-Forwarded-For": "10.1.2.3"})
    signed, body = _signed(hotkeys, miner, "the signature is in the trailers")
    signature = _chunked("/Prompting", {"X-Forwarded-For": "10.1.2.3"}, body, signed)
    return {"address": address, "signature": signature}


def test_trailers_never_override_headers(make_miner, hotkeys):
    with make_miner(ALLOWED, "axon.trusted_proxies=[127.0.0.1]") as miner:
        answers = {name: _ask_raw(miner.port, data, "127.0.0.1") for name, data in _trailer_attacks(hotkeys, miner).items()}
    assert answers == {"address": (403, "allow_ips: address 10.6.6.6 is not on the allow list"),
                       "signature": (401, "the request carries no hotkey header; sign it with one of btauth, "
                                          "epistula, v10")}


def test_a_request_framed_two_ways_is_refused_and_its_connection_ends(make_miner):
    # Content-Length and chunked at once: a proxy that framed it by length would see the chunked
    # body's second request as ours to answer (smuggling). 400, and nothing after it is read.
    body = b"5\r\nhello\r\n0\r\n\r\n"
    smuggled = request_bytes("GET", "/health", {})
    with make_miner() as miner, connect(miner.port, "127.0.0.2") as sock:
        sock.sendall(request_bytes("POST", "/Prompting", {"Content-Length": len(body), "Transfer-Encoding": "chunked"},
                                   body) + smuggled)
        status, head, answer = read_response(sock)
        after = sock.recv(65536)
    assert (status, json.loads(answer)["reason"]) == (400, "Transfer-Encoding and Content-Length both set; send one")
    assert head["connection"] == "close"
    assert after == b""  # the connection ended: the pipelined request was never answered


def _not_reading(port: int, source: str) -> socket.socket:
    """A connection whose client reads nothing (and whose receive buffer is small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def test_an_answer_nobody_reads_ends_its_connection_at_the_timeout(make_miner, hotkeys, client_for):
    # 8 MB of JSON to a client that reads nothing: past what the kernel buffers, the server may not
    # hold the connection (nor the request's task, nor its slot) beyond the request timeout.
    with make_miner("prompt._target_=tests.prompts.answers_megabytes", "axon.max_concurrency=1", "cache.ttl=0",
                    "axon.request_timeout=2") as miner:
        connections = miner._server.app.connections
        headers, body = _signed(hotkeys, miner, "answered to nobody")
        with _not_reading(miner.port, "127.0.0.1") as sock:
            sock.sendall(request_bytes("POST", "/Prompting", {**headers, "Content-Length": len(body)}, body))
            unsent = []
            wait_until(lambda: unsent.append(connections.largest_unsent()) or
                       gauge(miner, "miner_requests_total", route="/Prompting", status="499") == 1)
            wait_until(lambda: connections.total == 0 and gauge(miner, "miner_inflight") == 0)
        after = client_for(miner).prompt(["the slot is free again"])
    assert max(unsent) <= 2 * 65536, max(unsent)  # WRITE_BUFFER_HIGH plus one STREAM_PIECE
    assert after.status == 200, after.reason


def test_refusals_nobody_reads_end_their_connection_at_the_timeout(make_miner, client_for):
    # 200 pipelined requests, each refused by a 404 of 30 KB (its reason names the path): 6 MB of
    # answers to a client that reads nothing, more than the kernel buffers.
    path = "/" + "x" * 30000
    with make_miner("axon.request_timeout=2", "axon.max_refusals_per_ip=0") as miner:
        connections = miner._server.app.connections
        with _not_reading(miner.port, "127.0.0.2") as sock:
            try:  # the server stops reading once its answers back up, until it drops the connection
                sock.sendall(request_bytes("POST", path, {"Content-Length": 0}) * 200)
            except OSError:
                pass
            wait_until(lambda: connections.total == 0 and gauge(miner, "miner_inflight") == 0)
        after = client_for(miner).prompt(["served after the unread refusals"])
    assert after.status == 200, after.reason


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def haproxy(tmp_path):
    """Debian's HAProxy in front of a port: `start(upstream)` gives the port it listens on."""
    started = []

    def start(upstream: int) -> int:
        port = _free_port()
        config = tmp_path / f"haproxy-{upstream}.cfg"
        config.write_text(f"""
defaults
  mode http
  option forwardfor
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend miner
  bind 127.0.0.1:{port}
  default_backend miner
backend miner
  server miner 127.0.0.1:{upstream}
""")
        started.append(subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        wait_until(lambda: _listening(port))
        assert started[-1].poll() is None, "haproxy exited"
        return port

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_haproxy_forwards_trailers_and_the_miner_behind_it_ignores_them(make_miner, hotkeys, haproxy):
    # What HAProxy sends on: the trailer reaches the server, so the miner must be the one to ignore it.
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        front = haproxy(upstream.getsockname()[1])
        with connect(front, "127.0.0.2") as attacker:
            attacker.sendall(_chunked("/Prompting", {}, b"{}", {"X-Forwarded-For": "10.1.2.3"}))
            conn, _ = upstream.accept()
            with conn:
                conn.settimeout(10)
                forwarded = b""
                while not forwarded.endswith(b"\r\n\r\n") or b"0\r\n" not in forwarded:
                    forwarded += conn.recv(65536)
    assert b"x-forwarded-for: 10.1.2.3" in forwarded.lower().split(b"\r\n0\r\n", 1)[1]

    with make_miner(ALLOWED, "axon.trusted_proxies=[127.0.0.1]") as miner:
        front = haproxy(miner.port)
        headers, body = _signed(hotkeys, miner, "a trailer names the allowed address")
        address = _ask_raw(front, _chunked("/Prompting", headers, body, {"X-Forwarded-For": "10.1.2.3"}), "127.0.0.2")
        signed, body = _signed(hotkeys, miner, "the signature is in the trailers")
        signature = _ask_raw(front, _chunked("/Prompting", {}, body, signed), "127.0.0.2")
    assert address == (403, "allow_ips: address 127.0.0.2 is not on the allow list")
    assert signature[0] == 401, signature


# 2. Unverified work is admitted fairly by address ----------------------------------------------

def _slow_forged_claims(port: int, hotkeys, source: str, count: int) -> list[socket.socket]:
    """Requests claiming the validator's hotkey whose bodies never finish arriving."""
    claim = {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkeys["dev-validator"].ss58_address,
             "X-Bittensor-Nonce": str(time.time_ns()), "X-Bittensor-Signature": "0x" + "00" * 64,
             "Content-Length": "1000"}
    held = []
    for _ in range(count):
        sock = connect(port, source)
        sock.sendall(request_bytes("POST", "/Prompting", claim, b"{"))
        held.append(sock)
    return held


@pytest.mark.parametrize("addresses, each", [(4, 4), (1, 16), (10, 1)])
def test_a_validator_is_admitted_while_strangers_hold_the_unverified_pool(make_miner, client_for, hotkeys,
                                                                         addresses, each):
    # 2 + 16 in flight: at most 9 unverified. 4 addresses x 4 fill it; so does one with axon.max_queue=16,
    # and so do 10 addresses holding one each (the validator, holding none, still goes first).
    with make_miner("axon.max_concurrency=2", "axon.max_queue=16", f"axon.max_unverified_per_ip={each}",
                    "axon.request_timeout=30") as miner:
        pool = miner._server.app.pipeline.unverified
        held = [sock for n in range(addresses) for sock in
                _slow_forged_claims(miner.port, hotkeys, f"127.0.0.{2 + n}", each)]
        # Full, and every claim past it answered (503: no room, or made room for a lighter address).
        wait_until(lambda: pool.total == pool.max_total and sum(map(_answered, held)) == len(held) - pool.max_total)
        before = [sock for sock in held if _answered(sock)]
        reply = client_for(miner).prompt(["served while strangers hold the pool"])
        wait_until(lambda: sum(map(_answered, held)) > len(before))  # the refusal may come after the answer
        made_room = [read_response(sock) for sock in held if _answered(sock) and sock not in before]
        for sock in held:
            sock.close()
    assert reply.status == 200, reply.reason
    assert [(s, b"made room for another address" in body) for s, _, body in made_room] == [(503, True)]


def _answered(sock: socket.socket) -> bool:
    """Whether the server has written anything to `sock` yet (read nothing)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)


def test_a_shed_address_keeps_at_most_the_bound_of_what_it_sent(make_miner, hotkeys, client_for, tmp_path):
    # A connection sends a request, then a megabyte more while it is answered (the server reads
    # none of it meanwhile); its address is shed before the answer. When the server reads on, it
    # keeps at most HELD_MAX bytes for after the cool-down: the connection is dropped past that
    # (its answer with it, if still unread: a sender of megabytes while shed is no validator).
    from declarative_miner.server.connections import HELD_MAX

    gate = tmp_path / "gate"
    with make_miner("prompt._target_=tests.prompts.waits_for_file", f"+prompt.path={gate}", "cache.ttl=0",
                    "axon.max_refusals_per_ip=4", "axon.shed_for=30") as miner:
        app = miner._server.app
        headers, body = _signed(hotkeys, miner, "answered, then shed")
        with connect(miner.port, "127.0.0.2") as sock, connect(miner.port, "127.0.0.2") as flood:
            sock.sendall(request_bytes("POST", "/Prompting", {**headers, "Content-Length": len(body)}, body))
            wait_until(Path(f"{gate}.started").exists)
            sock.settimeout(0.5)
            try:  # what the kernel takes: the server reads none of it while it answers
                sock.sendall(request_bytes("POST", "/Prompting", {"Content-Length": 1 << 20}) + b"x" * (1 << 20))
            except TimeoutError:
                pass
            flood.sendall(request_bytes("GET", "/nothing", {}) * 20)  # refused (404): shed past 4
            wait_until(lambda: app.shedding.shed_for("127.0.0.2") > 0)
            gate.touch()
            kept = []
            wait_until(lambda: kept.append(app.connections.held_bytes) or app.connections.held_by("127.0.0.2") < 2)
        after = client_for(miner).prompt(["served while an address is shed"])
    assert max(kept) <= HELD_MAX
    assert after.status == 200, after.reason


# 5. A stream nobody reads is bounded, and ends -------------------------------------------------

def test_a_stream_nobody_reads_buffers_at_most_the_bound_and_ends_at_the_timeout(make_miner, hotkeys, client_for,
                                                                                 caplog):
    with make_miner("prompt._target_=tests.prompts.streams_megabytes", "axon.max_concurrency=1", "cache.ttl=0",
                    "axon.request_timeout=2") as miner:
        connections = miner._server.app.connections
        headers, body = _signed(hotkeys, miner, "streamed to nobody", "/StreamPrompting")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", miner.port))
        sock.sendall(request_bytes("POST", "/StreamPrompting", {**headers, "Content-Length": len(body)}, body))
        unsent = []
        wait_until(lambda: unsent.append(connections.largest_unsent()) or gauge(miner, "miner_inflight") == 0)
        ended = gauge(miner, "miner_requests_total", route="/StreamPrompting", status="499", wire_format="btauth")
        produced = sum(prompts.produced)
        after = client_for(miner).prompt(["the slot is free again"])
        sock.close()
    assert max(unsent) <= 2 * 65536, max(unsent)  # WRITE_BUFFER_HIGH plus one STREAM_PIECE
    assert ended == 1
    assert produced < 100 << 20  # the prompt was stopped, not run to its end
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert after.status == 200, after.reason


# 6. What an unverified request may send is bounded ---------------------------------------------

def test_a_declared_types_body_bound_cuts_a_forged_body_before_it_is_read(make_miner, hotkeys, tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "small.yaml").write_text("""
# @package _global_
synapses:
  Small: {inputs: {text: str}, outputs: {count: int}, answer: {_target_: tests.prompts.measure}, max_body_bytes: 4096}
""")
    claim = {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkeys["dev-validator"].ss58_address,
             "X-Bittensor-Nonce": str(time.time_ns()), "X-Bittensor-Signature": "0x" + "00" * 64}
    with make_miner(f"hydra.searchpath=[file://{tmp_path}]", "+recipe=small") as miner:
        declared = _ask_raw(miner.port, request_bytes("POST", "/Small", {**claim, "Content-Length": 100000}), "127.0.0.2")
        chunked = _ask_raw(miner.port, request_bytes("POST", "/Small", {**claim, "Transfer-Encoding": "chunked"})
                           + b"1000\r\n" + b"x" * 4096 + b"\r\n1000\r\n" + b"x" * 4096 + b"\r\n", "127.0.0.2")
    assert declared == (413, "body of 100000 bytes exceeds 4096")
    assert chunked == (413, "body exceeds 4096 bytes")


def test_unverified_bodies_are_bounded_in_total_and_the_heaviest_address_makes_room(make_miner, client_for, hotkeys):
    claim = {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkeys["dev-validator"].ss58_address,
             "X-Bittensor-Nonce": str(time.time_ns()), "X-Bittensor-Signature": "0x" + "00" * 64,
             "Content-Length": str(1 << 20)}
    with make_miner("axon.max_unverified_bytes=1048576", "axon.request_timeout=30") as miner:
        pool = miner._server.app.pipeline.unverified
        held = []
        for n in range(4):  # 4 addresses each send 300 KB of a 1 MB body, then wait
            sock = connect(miner.port, f"127.0.0.{2 + n}")
            sock.sendall(request_bytes("POST", "/Prompting", claim, b"x" * 300_000))
            held.append(sock)
        wait_until(lambda: pool.total == 4 - sum(map(_answered, held)))
        most = pool.bytes
        reply = client_for(miner).prompt(["served while strangers hold unverified bytes"])
        refused = [read_response(sock) for sock in held if _answered(sock)]
        for sock in held:
            sock.close()
    assert most <= 1 << 20
    assert reply.status == 200, reply.reason
    assert {(s, b"body bytes" in body or b"made room" in body) for s, _, body in refused} == {(503, True)}
