"""Whose address a request has: the TCP peer's, or behind a trusted reverse proxy the one its
X-Forwarded-For names. Raw sockets against a real uvicorn server; 127.0.0.1 stands for the proxy
(or a local process), 127.0.0.2 for a caller on another host; requests signed by bittensor's own
`http_auth`, as a bittensor 11 validator signs them."""

from __future__ import annotations

import json

from bittensor import http_auth

from declarative_miner.config import compose
from declarative_miner.errors import ConfigError
from declarative_miner.miner import Miner

from .test_open_internet import connect, read_response, request_bytes, send
from .test_shedding import UNSIGNED

ALLOWED = "+blacklist.rules.allow_ips={networks: [10.1.2.3/32]}"  # an address no socket here has


def _ask(hotkeys, miner, source: str, words: str, forwarded_for: str) -> tuple[int, str]:
    """A validator's signed request from `source`, naming `forwarded_for`: (status, reason)."""
    body = json.dumps({"roles": ["user"], "messages": [words]}).encode()
    headers = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                             receiver_ss58=miner.hotkey)
    status, _, answer = send(miner.port, {**headers, "X-Forwarded-For": forwarded_for}, body, source=source)
    return status, json.loads(answer).get("reason", "")


def test_without_trusted_proxies_x_forwarded_for_is_never_believed(make_miner, hotkeys, monkeypatch):
    """Not from 127.0.0.1 (uvicorn's default trusts it), and not with uvicorn's FORWARDED_ALLOW_IPS=*,
    which would let anyone pass an address allow list by writing a header."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    with make_miner(ALLOWED) as miner:
        refused = [_ask(hotkeys, miner, source, f"from {source}", "10.1.2.3") for source in ("127.0.0.1", "127.0.0.2")]
    assert refused == [(403, "allow_ips: address 127.0.0.1 is not on the allow list"),
                       (403, "allow_ips: address 127.0.0.2 is not on the allow list")]


def test_behind_a_trusted_proxy_the_caller_is_the_address_it_names_and_nobody_else_can_name_one(
        make_miner, hotkeys):
    with make_miner(ALLOWED, "axon.trusted_proxies=[127.0.0.1]") as miner:
        through_proxy = _ask(hotkeys, miner, "127.0.0.1", "via the proxy", "10.1.2.3")
        # A caller that wrote the header itself: the proxy appends the real address, read from the right.
        spoofed = _ask(hotkeys, miner, "127.0.0.1", "spoofed", "10.1.2.3, 10.9.9.9")
        direct = _ask(hotkeys, miner, "127.0.0.2", "direct", "10.1.2.3")
    assert through_proxy[0] == 200
    assert spoofed == (403, "allow_ips: address 10.9.9.9 is not on the allow list")
    assert direct == (403, "allow_ips: address 127.0.0.2 is not on the allow list")


def test_a_proxy_is_not_held_to_one_addresss_connection_bound_but_others_are(make_miner):
    with make_miner("axon.max_connections_per_ip=2", "axon.trusted_proxies=[127.0.0.0/31]") as miner:
        answered = {}
        for source in ("127.0.0.1", "127.0.0.2"):
            socks = [connect(miner.port, source) for _ in range(4)]
            statuses = []
            for sock in socks:
                sock.sendall(request_bytes("GET", "/health", {}))
                try:
                    statuses.append(read_response(sock)[0])
                except (AssertionError, ConnectionResetError):  # closed at once: over the bound
                    statuses.append(None)
            answered[source] = statuses
            for sock in socks:
                sock.close()
    assert answered["127.0.0.1"] == [200] * 4  # in 127.0.0.0/31: a proxy
    assert answered["127.0.0.2"] == [200, 200, None, None]


def test_a_flooding_caller_behind_the_proxy_gets_429_while_the_proxys_connection_serves_others(make_miner):
    with make_miner("axon.trusted_proxies=[127.0.0.1]", "axon.max_refusals_per_ip=5", "axon.shed_for=30") as miner:
        with connect(miner.port, "127.0.0.1") as proxy:
            def via(caller: str) -> tuple[int, dict]:
                proxy.sendall(UNSIGNED.replace(b"Host: miner", b"Host: miner\r\nX-Forwarded-For: " + caller.encode()))
                status, headers, _ = read_response(proxy)
                return status, headers
            flood = [via("10.6.6.6")[0] for _ in range(6)]  # the 6th refusal within a second sheds it
            shed = via("10.6.6.6")
            other = via("10.7.7.7")[0]
    assert flood == [401] * 6
    assert shed[0] == 429 and 0 < int(shed[1]["retry-after"]) <= 30
    assert other == 401  # read and answered: the proxy's connection was not paused


def test_a_trusted_proxy_that_is_not_a_network_is_a_config_error(home):
    try:
        Miner(compose([f"home={home}", "axon.port=0", "axon.trusted_proxies=[nginx]"]))
    except ConfigError as exc:
        message = str(exc)
    else:
        message = ""
    assert "axon.trusted_proxies: not a network (got nginx;" in message
