"""The outside attack's cheap holes, each over a real socket against a real server, the attacker at
127.0.0.2 (or behind the trusted proxy at 127.0.0.1), requests signed as strangers sign them: btauth/1
by bittensor's own `http_auth`, Epistula from the spec (tests/test_epistula.py), v10 from protocols.md."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import uvicorn
from bittensor import http_auth
from bittensor.sp_core import Keypair, ss58_decode, ss58_encode

from .conftest import wait_until
from .test_epistula import epistula
from .test_open_internet import ATTACKER, connect, read_response, request_bytes, send, v10_request

pytestmark = pytest.mark.slow
MESSAGES = json.dumps({"roles": ["user"], "messages": ["one key"]}).encode()


def respelled(address: str, prefix: int) -> str:
    """The same public key, written for another network."""
    return ss58_encode(ss58_decode(address), prefix)


def _raw(port: int, method: str, target: str, headers: dict, body: bytes = b"", source: str = ATTACKER):
    with connect(port, source) as sock:
        sock.sendall(request_bytes(method, target, {**headers, "Content-Length": len(body)}, body))
        return read_response(sock)


# 1. One key, many SS58 spellings -------------------------------------------------------------

def test_a_captured_epistula_request_respelled_for_other_networks_is_a_replay(make_miner, hotkeys):
    validator = hotkeys["dev-validator"]
    with make_miner("blacklist=open", "cache.ttl=0") as miner:
        captured = epistula(validator, MESSAGES, miner.hotkey)
        first = _raw(miner.port, "POST", "/Prompting", captured, MESSAGES, source="127.0.0.1")
        replays = [_raw(miner.port, "POST", "/Prompting",
                        {**captured, "Epistula-Signed-By": respelled(validator.ss58_address, prefix)}, MESSAGES)
                   for prefix in (0, 2, 7)]
    assert first[0] == 200
    assert [(status, b"already used" in answer) for status, _, answer in replays] == [(401, True)] * 3


def test_a_ping_respelled_is_a_replay_under_any_blacklist(make_miner, hotkeys):
    validator = hotkeys["dev-validator"]
    with make_miner() as miner:
        captured = epistula(validator, b"{}", miner.hotkey)
        first = _raw(miner.port, "POST", "/Synapse", captured, b"{}", source="127.0.0.1")
        replay = _raw(miner.port, "POST", "/Synapse", {**captured, "Epistula-Signed-By":
                                                       respelled(validator.ss58_address, 5)}, b"{}")
    assert first[0] == 200 and replay[0] == 401 and b"already used" in replay[2]


def test_a_denied_key_signing_as_another_spelling_of_itself_is_still_denied(make_miner, hotkeys):
    validator = hotkeys["dev-validator"]
    with make_miner(f"blacklist.rules.deny_hotkeys.hotkeys=[{validator.ss58_address}]") as miner:
        refused = []
        for prefix in (0, 2, 42):
            headers = http_auth.sign(validator, method="POST", path="/Prompting", body=MESSAGES, receiver_ss58=miner.hotkey)
            sender = respelled(validator.ss58_address, prefix)
            payload = http_auth.build_payload(scheme="sr25519", method="POST", path="/Prompting", body=MESSAGES,
                                              nonce_ns=int(headers["X-Bittensor-Nonce"]), sender_ss58=sender,
                                              receiver_ss58=miner.hotkey)
            headers = {**headers, "X-Bittensor-Hotkey": sender,
                       "X-Bittensor-Signature": "0x" + bytes(validator.sign(payload)).hex()}
            refused.append(_raw(miner.port, "POST", "/Prompting", headers, MESSAGES))
    assert [(status, b"deny list" in answer) for status, _, answer in refused] == [(403, True)] * 3


def test_the_prompt_and_the_cache_see_one_spelling_of_a_caller(make_miner, hotkeys):
    """The signer's key in the generic spelling, whatever the request wrote: a caller-scoped cache
    counts a re-spelled repeat as the same caller's."""
    validator = hotkeys["dev-validator"]
    with make_miner("prompt._target_=tests.prompts.hotkey_of_caller", "cache.scope=caller") as miner:
        answers = []
        for i, prefix in enumerate((0, 42)):
            body = json.dumps({"roles": ["user"], "messages": ["who"]}).encode()
            headers = epistula(validator, body, miner.hotkey)
            headers["Epistula-Signed-By"] = respelled(validator.ss58_address, prefix)
            answers.append(_raw(miner.port, "POST", "/Prompting", headers, body, source="127.0.0.1"))
    assert answers[0][0] == 200 and json.loads(answers[0][2])["completion"] == validator.ss58_address
    assert answers[1][0] == 409  # the same prompt from the same key, spelled otherwise


# 2. Dual stack -------------------------------------------------------------------------------

def test_an_ipv4_caller_of_a_dual_stack_socket_meets_the_ipv4_deny_list(make_miner, hotkeys):
    with make_miner("axon.ip=::", "+blacklist.rules.deny_ips={networks: [127.0.0.2/32]}") as miner:
        signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=MESSAGES,
                                receiver_ss58=miner.hotkey)
        denied = send(miner.port, signed, MESSAGES, source=ATTACKER)
    assert denied[0] == 403 and b"address 127.0.0.2 is on the deny list" in denied[2]


def test_a_proxy_writing_the_mapped_form_names_the_ipv4_caller(make_miner, hotkeys):
    with make_miner("axon.trusted_proxies=[127.0.0.1]", "+blacklist.rules.deny_ips={networks: [10.0.0.9/32]}") as miner:
        signed = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=MESSAGES,
                                receiver_ss58=miner.hotkey)
        denied = send(miner.port, {**signed, "X-Forwarded-For": "::ffff:10.0.0.9"}, MESSAGES)
    assert denied[0] == 403 and b"address 10.0.0.9 is on the deny list" in denied[2]


def test_ipv6_callers_are_counted_by_their_prefix(make_miner):
    """Two addresses of one /64, behind the trusted proxy, flood together: shed as one."""
    with make_miner("axon.trusted_proxies=[127.0.0.1]", "axon.max_refusals_per_ip=4", "axon.shed_for=30") as miner:
        statuses = []
        with connect(miner.port, "127.0.0.1") as proxy:
            for i in range(12):
                proxy.sendall(request_bytes("POST", "/Prompting", {"X-Forwarded-For": f"2001:db8::{i % 2 + 1}",
                                                                   "Content-Length": "2"}, b"{}"))
                statuses.append(read_response(proxy)[0])
            proxy.sendall(request_bytes("POST", "/Prompting", {"X-Forwarded-For": "2001:db8:1::1",
                                                               "Content-Length": "2"}, b"{}"))
            other_prefix = read_response(proxy)[0]
    assert statuses[:5] == [401] * 5 and set(statuses[6:]) == {429}  # both addresses shed after 5
    assert other_prefix == 401  # another /64 is another caller


# 3. WebSocket upgrades -----------------------------------------------------------------------

def test_websocket_upgrades_are_refused_without_a_500_or_a_lockout(make_miner, caplog):
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13"}
    with caplog.at_level(logging.INFO), make_miner("axon.max_refusals_per_ip=0") as miner:
        statuses = {_raw(miner.port, "GET", "/", upgrade)[0] for _ in range(140)}
        after = _raw(miner.port, "GET", "/health", {})[0]  # the address may still connect and be answered
    assert statuses == {404} and after == 200
    lines = [r for r in caplog.records if "upgrade" in r.getMessage().lower() or r.levelno >= logging.ERROR]
    assert len(lines) <= 5, [r.getMessage() for r in lines]


# 4. No unauthenticated 500s ------------------------------------------------------------------

def test_numbers_of_thousands_of_digits_are_a_401_and_count_as_refusals(make_miner, hotkeys, caplog):
    huge = "9" * 5000
    stranger = hotkeys["stranger"]
    with caplog.at_level(logging.INFO), make_miner("axon.max_refusals_per_ip=30", "axon.shed_for=30",
                                                   "blacklist=open") as miner:
        btauth = {**http_auth.sign(stranger, method="POST", path="/Prompting", body=MESSAGES,
                                   receiver_ss58=miner.hotkey), "X-Bittensor-Nonce": huge}
        stamped = {**epistula(stranger, MESSAGES, miner.hotkey), "Epistula-Timestamp": huge}
        v10_headers, v10_body = v10_request(stranger, miner.hotkey, ["huge"], nonce=time.time_ns())
        v10_headers["bt_header_dendrite_nonce"] = huge
        answers = [_raw(miner.port, "POST", "/Prompting", headers, body)
                   for headers, body in [(btauth, MESSAGES), (stamped, MESSAGES), (v10_headers, v10_body)]]
        with connect(miner.port) as flood:  # 40 more on one connection: shed after 30
            answered = 0
            for _ in range(40):
                flood.sendall(request_bytes("POST", "/Prompting", {**btauth, "Content-Length": len(MESSAGES)},
                                            MESSAGES))
                flood.settimeout(2)
                try:
                    answered += read_response(flood)[0] == 401
                except TimeoutError:
                    break
    assert [(status, b"decimal number of at most 20 digits" in answer) for status, _, answer in answers] == \
        [(401, True)] * 3
    assert answered < 30
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# 6. What is never shed, and what anyone can read -----------------------------------------------

def test_health_says_no_pid_and_a_flood_of_it_is_shed(make_miner):
    with make_miner("axon.max_refusals_per_ip=20", "axon.shed_for=30") as miner:
        health = json.loads(_raw(miner.port, "GET", "/health", {})[2])
        answered = 0
        with connect(miner.port) as flood:
            flood.settimeout(2)
            for _ in range(40):
                flood.sendall(request_bytes("GET", "/health", {}))
                try:
                    answered += read_response(flood)[0] == 200
                except TimeoutError:
                    break
    assert "pid" not in health and "inflight" not in health and health["status"] == "ok"
    assert answered < 25


def test_signed_pings_from_unregistered_keys_are_counted_and_shed(make_miner):
    with make_miner("axon.max_refusals_per_ip=10", "axon.shed_for=30") as miner:
        answered = 0
        with connect(miner.port) as flood:
            flood.settimeout(2)
            for i in range(30):
                fresh = Keypair.create_from_uri(f"//fresh{i}")
                headers = http_auth.sign(fresh, method="POST", path="/Synapse", body=b"{}", receiver_ss58=miner.hotkey)
                flood.sendall(request_bytes("POST", "/Synapse", {**headers, "Content-Length": "2"}, b"{}"))
                try:
                    answered += read_response(flood)[0] == 200
                except TimeoutError:
                    break
    assert 10 <= answered < 15


# 7. Upstream text never reaches the caller -----------------------------------------------------

def test_a_model_servers_error_text_quoting_the_api_key_is_not_relayed(make_miner, client_for, monkeypatch, caplog):
    pytest.importorskip("openai")
    secret = "sk-live-4f9a0c7d2e1b"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    async def refusing(scope, receive, send):  # an OpenAI-style server that quotes the key it was sent
        if scope["type"] != "http":
            return
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {secret}. See the docs.",
                                     "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    server = uvicorn.Server(uvicorn.Config(refusing, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.WARNING), \
                make_miner("+recipe=openai", f"prompt.base_url=http://127.0.0.1:{port}/v1", "cache.ttl=0") as miner:
            reply = client_for(miner).prompt(["hello"])
    finally:
        server.should_exit = True
        thread.join(10)
    assert reply.status == 502 and reply.reason == "the model server refused the request (HTTP 401, invalid_api_key)"
    assert secret not in caplog.text and "Incorrect API key provided: ***" in caplog.text
