"""Serving btauth/1 over a real uvicorn server: every status, and the miner keeps serving."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from bittensor import http_auth

from declarative_miner.chain import dev
from declarative_miner.miner import Miner
from declarative_miner.prompting import Prompting

from . import prompts
from .conftest import gauge, wait_until
from .test_open_internet import read_response


def _raw_request(port: int, head: str, timeout: float = 5.0) -> str:
    """Send raw HTTP head bytes (and no body) and return what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        status, headers, body = read_response(sock)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status} \r\n{head}\r\n{body.decode()}"


def test_a_validator_gets_the_echo_back(make_miner, client_for):
    with make_miner() as miner:
        reply = client_for(miner).prompt(["You are a test.", "What is 2+2?"], ["system", "user"])
    assert (reply.status, reply.completion) == (200, "What is 2+2?")


def test_a_repeated_prompt_within_the_ttl_is_a_409_and_ttl_0_disables_it(make_miner, client_for):
    with make_miner() as miner:
        client = client_for(miner)
        assert client.prompt(["once"]).status == 200
        again = client.prompt(["once"])
        assert (again.status, again.error) == (409, "duplicate prompt")
        assert "7200 s" in again.reason
    with make_miner("cache.ttl=0") as miner:
        client = client_for(miner)
        assert [client.prompt(["twice"]).status for _ in range(2)] == [200, 200]


def test_a_prompt_is_served_again_once_its_ttl_has_passed(make_miner, client_for):
    with make_miner("cache.ttl=0.5") as miner:
        client = client_for(miner)
        assert client.prompt(["later"]).status == 200
        assert client.prompt(["later"]).status == 409
        deadline = time.monotonic() + 10
        while (status := client.prompt(["later"]).status) == 409 and time.monotonic() < deadline:
            pass
        assert status == 200


def test_reuse_answers_a_repeat_from_the_cache_without_calling_the_prompt(make_miner, client_for, tmp_path):
    with make_miner("cache.on_hit=reuse", "prompt._target_=tests.prompts.counting",
                    f"+prompt.path={tmp_path / 'calls'}") as miner:
        client = client_for(miner)
        assert [client.prompt(["same"]).completion for _ in range(3)] == ["call 1"] * 3


def test_the_cache_survives_a_restart(make_miner, client_for):
    with make_miner() as miner:
        assert client_for(miner).prompt(["remember me"]).status == 200
    with make_miner() as miner:
        assert client_for(miner).prompt(["remember me"]).status == 409


def test_an_unknown_hotkey_is_rejected_before_its_body_is_read(make_miner, hotkeys):
    with make_miner("axon.request_timeout=60") as miner:
        stranger = hotkeys["stranger"].ss58_address
        # Content-Length promises a body that never comes: reading it would hang past 5 s.
        answer = _raw_request(miner.port, "POST /Prompting HTTP/1.1\r\nHost: x\r\n"
                              f"X-Bittensor-Hotkey: {stranger}\r\nContent-Length: 1000\r\n\r\n")
    assert answer.startswith("HTTP/1.1 403")
    assert json.loads(answer.partition("\r\n\r\n")[2])["reason"] == "registered: hotkey is not registered on netuid 1"


def test_each_blacklist_rule_gives_its_reason(make_miner, client_for):
    with make_miner() as miner:
        assert client_for(miner, "dev-miner").prompt(["x"]).reason == "validator_permit: hotkey holds no validator permit"
        assert client_for(miner, "small-validator").prompt(["x"]).reason == \
            "min_stake: stake 10 total is below the minimum 1000"
    with make_miner("blacklist=open") as miner:
        assert client_for(miner, "stranger").prompt(["y"]).status == 200


def test_allow_and_deny_lists_decide_before_the_later_rules(make_miner, client_for, hotkeys):
    stranger, validator = hotkeys["stranger"].ss58_address, hotkeys["dev-validator"].ss58_address
    with make_miner(f"blacklist.rules.allow_hotkeys.hotkeys=[{stranger}]",
                    f"blacklist.rules.deny_hotkeys.hotkeys=[{validator}]") as miner:
        assert client_for(miner, "stranger").prompt(["z"]).status == 200
        assert client_for(miner).prompt(["z"]).reason == "deny_hotkeys: hotkey is on the deny list"


def test_a_tampered_body_is_a_401(make_miner, client_for):
    with make_miner() as miner:
        client = client_for(miner)
        body = json.dumps({"roles": ["user"], "messages": ["pay me"]}).encode()
        headers = client.signed_headers(body)
        reply = client.send(body.replace(b"pay me", b"pay us"), headers)
    assert (reply.status, reply.error) == (401, "authentication failed")
    assert reply.reason.startswith("BadSignature")


@pytest.mark.parametrize("tamper, expected", [
    (lambda h: {**h, "X-Bittensor-Receiver": "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"}, "WrongReceiver"),
    (lambda h: {k: v for k, v in h.items() if k != "X-Bittensor-Signature"}, "MalformedAuth"),
    (lambda h: {**h, "X-Bittensor-Nonce": str(int(h["X-Bittensor-Nonce"]) - 60 * 10**9)}, "StaleRequest"),
    (lambda h: {**h, "X-Bittensor-Nonce": str(int(h["X-Bittensor-Nonce"]) + 60 * 10**9)}, "StaleRequest"),
])
def test_auth_failures_are_401_with_their_reason(make_miner, client_for, tamper, expected):
    with make_miner() as miner:
        client = client_for(miner)
        body = b'{"roles": ["user"], "messages": ["hi"]}'
        reply = client.send(body, tamper(client.signed_headers(body)))
    assert (reply.status, reply.reason.split(":")[0]) == (401, expected)


def test_a_replayed_request_is_a_401(make_miner, client_for):
    with make_miner("cache.ttl=0") as miner:
        client = client_for(miner)
        body = b'{"roles": ["user"], "messages": ["hi"]}'
        headers = client.signed_headers(body)
        assert client.send(body, headers).status == 200
        replay = client.send(body, headers)
    assert (replay.status, replay.reason.split(":")[0]) == (401, "ReplayedRequest")


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "body is not valid JSON"),
    (b"\xff\xfe", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'{"roles": ["user"], "messages": [1]}', "'messages.0': should be text; 'messages' is list[str]"),
    (b'{"roles": ["user"]}', "'messages' is required; 'messages' is list[str]"),
    (b'{"roles": [], "messages": ["a"]}', "'roles' has 0 entries but 'messages' has 1"),
    (b'{"roles": ["user"], "messages": ["\\ud800"]}', "'messages' holds a lone surrogate"),
    # Spelled in bytes as UTF-8 would spell it (not valid UTF-8): json.loads decodes it all the same.
    (b'{"roles": ["user"], "messages": ["\xed\xa0\x80"]}', "'messages' holds a lone surrogate"),
    # Anywhere in the body, keys included, at any depth json.loads reads: a body must be text.
    (b'{"roles": ["user"], "messages": ["hi"], "ignored": {"deep": ["\\udc00"]}}', "'ignored' holds a lone surrogate"),
    (b'{"roles": ["user"], "messages": ["hi"], "\\ud800": 1}', "'\ud800' holds a lone surrogate"),
    (b'{"roles": ["user"], "messages": ["hi"], "ignored": ' + b"[" * 600 + b'"\\ud800"' + b"]" * 600 + b"}",
     "'ignored' holds a lone surrogate"),
])
def test_a_malformed_body_is_a_422_with_the_reason(make_miner, client_for, body, reason):
    with make_miner() as miner:
        client = client_for(miner)
        reply = client.send(body, client.signed_headers(body))
        assert (reply.status, reply.error) == (422, "malformed body")
        assert reply.reason.startswith(reason)
        assert client.prompt(["still serving"]).status == 200


@pytest.mark.parametrize("body", [
    b'\xef\xbb\xbf{"roles": ["user"], "messages": ["after a byte order mark"]}',
    b'{"roles": ["user"], "messages": ["nested deep"], "ignored": ' + b"[" * 300 + b"]" * 300 + b"}",
])
def test_a_body_pythons_json_reads_is_served(make_miner, client_for, body):
    """A byte order mark and deep nesting are JSON the miner reads (json.loads)."""
    with make_miner() as miner:
        client = client_for(miner)
        assert client.send(body, client.signed_headers(body)).status == 200


def test_a_completion_holding_a_lone_surrogate_is_still_answered_in_json(make_miner, hotkeys):
    """UTF-8 cannot encode such text; json.dumps escapes it."""
    with make_miner("prompt._target_=tests.prompts.lone_surrogate", "cache.ttl=0") as miner:
        body = json.dumps({"roles": ["user"], "messages": ["hi"]}).encode()
        headers = http_auth.sign(hotkeys[dev.DEV_VALIDATOR], method="POST", path="/Prompting", body=body,
                                 receiver_ss58=miner.hotkey)
        reply = httpx.post(f"http://127.0.0.1:{miner.port}/Prompting", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.content)["completion"] == "caf\ud800"


def test_a_body_over_the_limit_is_a_413(make_miner, client_for):
    with make_miner("axon.max_body_bytes=100") as miner:
        client = client_for(miner)
        body = json.dumps({"roles": ["user"], "messages": ["x" * 200]}).encode()
        reply = client.send(body, client.signed_headers(body))
    assert (reply.status, reply.error) == (413, "body too large")


@pytest.mark.parametrize("target, status, reason", [
    ("tests.prompts.raises", 500, "RuntimeError: the model fell over"),
    ("tests.prompts.wrong_type", 500, "the prompt returned int; expected str, Prompting or text chunks"),
])
def test_a_failing_prompt_is_a_500_and_the_miner_keeps_serving(make_miner, client_for, target, status, reason):
    with make_miner(f"prompt._target_={target}") as miner:
        client = client_for(miner)
        reply = client.prompt(["boom"])
        assert (reply.status, reply.reason) == (status, reason)
        # A failed prompt is no duplicate: the same prompt may be sent again.
        assert client.prompt(["boom"]).status == status
        assert httpx.get(f"http://127.0.0.1:{miner.port}/health").status_code == 200


def test_a_prompt_past_the_timeout_is_a_504(make_miner, client_for):
    prompts.release.clear()
    with make_miner("prompt._target_=tests.prompts.slow", "axon.request_timeout=0.5") as miner:
        reply = client_for(miner).prompt(["too slow"])
        prompts.release.set()
    assert (reply.status, reply.error) == (504, "prompt timed out")


def test_over_capacity_is_a_503(make_miner, client_for):
    prompts.release.clear()
    with make_miner("prompt._target_=tests.prompts.slow", "axon.max_concurrency=1", "axon.max_queue=0",
                    "cache.ttl=0") as miner:
        import threading

        first = threading.Thread(target=client_for(miner).prompt, args=(["occupy"],))
        first.start()
        deadline = time.monotonic() + 10
        while not _busy(miner) and time.monotonic() < deadline:
            pass
        reply = client_for(miner).prompt(["no room"])
        prompts.release.set()
        first.join()
    assert (reply.status, reply.error) == (503, "over capacity")


def _busy(miner: Miner) -> bool:
    return gauge(miner, "miner_inflight") >= 1


def test_an_async_prompt_is_awaited(make_miner, client_for):
    with make_miner("prompt._target_=tests.prompts.async_upper") as miner:
        assert client_for(miner).prompt(["loud"]).completion == "LOUD"


def test_the_prompt_sees_the_signed_hotkey(make_miner, client_for, hotkeys):
    with make_miner("prompt._target_=tests.prompts.hotkey_of_caller") as miner:
        assert client_for(miner).prompt(["who"]).completion == hotkeys["dev-validator"].ss58_address


def test_health_and_unknown_routes(make_miner):
    with make_miner() as miner:
        health = httpx.get(f"http://127.0.0.1:{miner.port}/health").json()
        missing = httpx.get(f"http://127.0.0.1:{miner.port}/nope")
    assert health["status"] == "ok" and health["hotkey"] == miner.hotkey and health["uid"] == 0
    assert missing.status_code == 404 and "POST /Prompting" in missing.json()["reason"]


def test_a_seed_style_subclass_overrides_prompt_blacklist_and_priority(make_miner, client_for):
    class CustomMiner(Miner):
        def prompt(self, synapse: Prompting) -> Prompting:
            synapse.completion = "The meaning of life is 42."
            return synapse

        def priority(self, synapse: Prompting) -> float:
            self.priorities_asked = getattr(self, "priorities_asked", 0) + 1
            return 1.0

    class StrictMiner(Miner):
        def blacklist(self, synapse: Prompting) -> tuple[bool, str]:
            return synapse.dendrite.hotkey.startswith("5"), "every ss58 hotkey is out"

    with make_miner(cls=CustomMiner) as miner:
        assert client_for(miner).prompt(["?"]).completion == "The meaning of life is 42."
        assert miner.priorities_asked == 1
    with make_miner(cls=StrictMiner) as miner:
        assert client_for(miner).prompt(["?"]).reason == "every ss58 hotkey is out"


def test_a_with_block_releases_its_port_for_the_next(make_miner, client_for):
    first = make_miner()
    with first:
        port = first.port
        assert client_for(first).prompt(["a"]).status == 200
    second = make_miner(f"axon.port={port}")
    with second:
        assert second.port == port
        assert client_for(second).prompt(["b"]).status == 200


def test_a_taken_port_is_a_config_error_naming_axon_port(make_miner):
    from declarative_miner.errors import ConfigError

    with make_miner() as first:
        with pytest.raises(ConfigError, match="axon.port: cannot listen on 127.0.0.1"):
            make_miner(f"axon.port={first.port}").run_in_background_thread()


def test_an_edit_to_the_dev_metagraph_applies_while_serving(make_miner, client_for, home, hotkeys):
    import yaml

    with make_miner("network.sync_interval=0.1") as miner:
        client = client_for(miner, "stranger")
        assert client.prompt(["let me in"]).status == 403
        path = home / "dev" / "metagraph.yaml"
        graph = yaml.safe_load(path.read_text())
        graph["neurons"].append({"hotkey": hotkeys["stranger"].ss58_address, "stake": 5000, "validator_permit": True})
        path.write_text(yaml.safe_dump(graph))
        deadline = time.monotonic() + 10
        while miner.metagraph.by_hotkey(hotkeys["stranger"].ss58_address) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.prompt(["let me in"]).status == 200


def test_a_damaged_cache_is_moved_aside_and_serving_goes_on(make_miner, client_for, home):
    cache = home / "cache"
    cache.mkdir()
    (cache / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    with make_miner() as miner:
        assert client_for(miner).prompt(["fresh start"]).status == 200
    assert [p.name.startswith("cache.damaged-") for p in home.iterdir() if p.name != "cache"].count(True) == 1


def test_metrics_count_requests_by_protocol_and_outcome_and_report_the_state(make_miner, client_for):
    with make_miner() as miner:
        client = client_for(miner)
        client.prompt(["counted"])
        client.prompt(["counted"])
        client.prompt(["v10 counted"], wire_format="v10")
        client_for(miner, "stranger").prompt(["no"])
        response = httpx.get(f"http://127.0.0.1:{miner.metrics_port}/metrics")
        on_the_public_port = httpx.get(f"http://127.0.0.1:{miner.port}/metrics").status_code
    text = response.text
    assert on_the_public_port == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert 'miner_requests_total{route="/Prompting",status="200",wire_format="btauth"} 1.0' in text
    assert 'miner_requests_total{route="/Prompting",status="409",wire_format="btauth"} 1.0' in text
    assert 'miner_requests_total{route="/Prompting",status="403",wire_format="btauth"} 1.0' in text
    assert 'miner_requests_total{route="/Prompting",status="200",wire_format="v10"} 1.0' in text
    assert 'miner_request_seconds_bucket{le="0.5",route="/Prompting",wire_format="btauth"}' in text
    for metric in ("miner_queue_depth 0.0", "miner_inflight 0.0", "miner_cache_hits_total 0.0",
                  "miner_metagraph_timestamp_seconds", "miner_metagraph_block"):
        assert metric in text


def test_plain_uvicorn_serving_the_app_verifies_refuses_and_answers(home, hotkeys):
    """`uvicorn.run(Miner().asgi_app())`: any ASGI server runs the miner (its stores open in the lifespan)."""
    import threading

    import uvicorn

    from declarative_miner.config import compose

    miner = Miner(compose([f"home={home}", "metrics.port=null"]))
    server = uvicorn.Server(uvicorn.Config(miner.asgi_app(), host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        body = json.dumps({"roles": ["user"], "messages": ["plain uvicorn"]}).encode()
        signed = http_auth.sign(hotkeys[dev.DEV_VALIDATOR], method="POST", path="/Prompting", body=body,
                                receiver_ss58=miner.hotkey)
        served = httpx.post(f"http://127.0.0.1:{port}/Prompting", content=body, headers=signed)
        unsigned = httpx.post(f"http://127.0.0.1:{port}/Prompting", content=body)
    finally:
        server.should_exit = True
        thread.join(30)
        miner.close()
    assert (served.status_code, served.json()["completion"]) == (200, "plain uvicorn")
    assert unsigned.status_code == 401
