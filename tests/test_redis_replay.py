"""Several machines behind one hotkey: the replay store in a real Redis server started here."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from declarative_miner.auth import v10

from .conftest import require, wait_until


@pytest.fixture
def redis_url(tmp_path):
    require(shutil.which("redis-server") is not None,
            "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    import redis

    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_until(answers)
    yield f"redis://127.0.0.1:{port}/0", server
    client.close()
    server.terminate()
    server.wait(10)


def test_a_request_replayed_to_another_machine_is_refused(make_miner, client_for, redis_url):
    url, _ = redis_url
    with make_miner(f"axon.replay_store={url}", "cache.ttl=0") as first, \
            make_miner(f"axon.replay_store={url}", "cache.ttl=0") as second:
        body = json.dumps({"roles": ["user"], "messages": ["once across machines"]}).encode()
        one, other = client_for(first), client_for(second)
        headers = one.signed_headers(body)
        assert one.send(body, headers).status == 200
        replay = other.send(body, headers)
        assert (replay.status, replay.reason.split(":")[0]) == (401, "ReplayedRequest")

        v10_headers, v10_body = v10.sign(one.signer, receiver=first.hotkey, roles=["user"], messages=["v10"],
                                         uuid=one.uuid)
        assert one.send(v10_body, v10_headers).status == 200
        assert other.send(v10_body, v10_headers).status == 401
        newer_headers, newer_body = v10.sign(one.signer, receiver=first.hotkey, roles=["user"], messages=["v10 b"],
                                             uuid=one.uuid)
        assert other.send(newer_body, newer_headers).status == 200  # a newer nonce, on the other machine


def test_an_unreachable_replay_store_fails_closed_with_503(make_miner, client_for, redis_url):
    url, server = redis_url
    with make_miner(f"axon.replay_store={url}") as miner:
        client = client_for(miner)
        assert client.prompt(["before"]).status == 200
        server.terminate()
        server.wait(10)
        reply = client.prompt(["after"])
        assert (reply.status, reply.error) == (503, "unavailable")
        assert reply.reason.startswith("the replay store is unreachable")
        assert client.http.get("/health").status_code == 200


def test_a_rate_limit_is_one_budget_across_machines(make_miner, client_for, redis_url):
    url, _ = redis_url
    rule = "+blacklist.rules.rate_limit={requests: 2, window: 60}"
    with make_miner(f"axon.replay_store={url}", "cache.ttl=0", rule) as first, \
            make_miner(f"axon.replay_store={url}", "cache.ttl=0", rule) as second:
        clients = [client_for(first), client_for(second)]
        replies = [clients[i % 2].prompt([f"machine budget {i}"]) for i in range(4)]
    assert [r.status for r in replies] == [200, 200, 429, 429]
    assert replies[2].reason == "more than 2 requests in 60 s; retry in 30 s"


def test_the_prompt_cache_is_one_across_machines_in_redis(make_miner, client_for, redis_url):
    """Two miners, each with its own disk, behind one Redis: a duplicate is a duplicate anywhere,
    `reuse` answers from the other machine's completion, and cache.clear empties Redis."""
    url, _ = redis_url
    with make_miner(f"axon.replay_store={url}", "cache.directory=${home}/a") as first, \
            make_miner(f"axon.replay_store={url}", "cache.directory=${home}/b") as second:
        assert client_for(first).prompt(["asked of two machines"]).status == 200
        assert client_for(second).prompt(["asked of two machines"]).status == 409
    counting = ["cache.on_hit=reuse", "prompt._target_=tests.prompts.counting", "+prompt.path=${home}/calls"]
    with make_miner(f"axon.replay_store={url}", *counting, "cache.directory=${home}/c") as first, \
            make_miner(f"axon.replay_store={url}", *counting, "cache.directory=${home}/d") as second:
        answered = client_for(first).prompt(["reused across machines"]).completion
        assert client_for(second).prompt(["reused across machines"]).completion == answered
    with make_miner(f"axon.replay_store={url}", "cache.clear=true", "cache.directory=${home}/e") as cleared:
        assert client_for(cleared).prompt(["asked of two machines"]).status == 200
