"""Request policies: each blacklist rule deciding, live list files, rate limits, IP rules,
priority that schedules, and the single-flight cache."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from declarative_miner.chain.metagraph import Metagraph, Neuron
from declarative_miner.client import MinerClient
from declarative_miner.errors import RateLimited
from declarative_miner.policies.blacklist import (
    AllowHotkeys,
    AllowIps,
    Blacklist,
    DenyHotkeys,
    DenyIps,
    MinStake,
    Registered,
    ValidatorPermit,
)
from declarative_miner.policies.lists import HotkeyList
from declarative_miner.policies.priority import TimeStake, by_stake
from declarative_miner.policies.rate_limit import RateLimit
from declarative_miner.prompting import Prompting, TerminalInfo

from . import prompts
from .conftest import gauge, wait_until
from .test_first_run import Running

A, B, C = ("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
           "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y")
GRAPH = Metagraph(netuid=7, neurons=(
    Neuron(0, A, validator_permit=True, alpha_stake=5000, tao_stake=20, total_stake=5020),
    Neuron(1, B, validator_permit=False, alpha_stake=9000, tao_stake=0, total_stake=9000),
))


def caller(hotkey: str | None, ip: str = "127.0.0.1") -> Prompting:
    return Prompting(dendrite=TerminalInfo(hotkey=hotkey, ip=ip))


@pytest.mark.parametrize("rule, hotkey, decision", [
    (Registered(), C, (False, "hotkey is not registered on netuid 7")),
    (Registered(), A, None),
    (ValidatorPermit(), B, (False, "hotkey holds no validator permit")),
    (ValidatorPermit(), C, (False, "hotkey holds no validator permit")),
    (MinStake(1000, unit="tao"), A, (False, "stake 20 tao is below the minimum 1000")),
    (MinStake(1000, unit="alpha"), A, None),
    (MinStake(6000, unit="total"), C, (False, "stake 0 total is below the minimum 6000")),
    (DenyHotkeys([A]), A, (False, "hotkey is on the deny list")),
    (AllowHotkeys([C]), C, (True, "hotkey is on the allow list")),
    (AllowHotkeys([C]), None, None),
])
def test_each_rule_decides_with_its_reason(rule, hotkey, decision):
    assert rule(caller(hotkey), GRAPH) == decision


def test_the_first_rule_that_decides_wins_and_ip_rules_run_first():
    blacklist = Blacklist([("allow", AllowHotkeys([C])), ("registered", Registered()),
                           ("deny_ips", DenyIps(["10.0.0.0/8"]))])
    assert blacklist.check(caller(C), GRAPH) == (False, "allow: hotkey is on the allow list")
    assert blacklist.check(caller(C, "10.1.2.3"), GRAPH) == (True, "deny_ips: address 10.1.2.3 is on the deny list")
    assert blacklist.check(caller(B), GRAPH) == (False, "no rule denied this hotkey")
    assert blacklist.admits_non_validators


def test_ip_rules_take_cidr_lists_of_both_families():
    assert AllowIps(["192.168.0.0/16", "::1/128"])(caller(A, "::1"), GRAPH) is None
    assert AllowIps(["192.168.0.0/16"])(caller(A, "8.8.8.8"), GRAPH) == (False, "address 8.8.8.8 is not on the allow list")
    assert DenyIps(["8.8.0.0/16"])(caller(A, "not an ip"), GRAPH) is None


def test_a_stake_unit_must_be_named_right():
    with pytest.raises(ValueError, match="unit must be one of alpha, tao, total"):
        MinStake(1, unit="rao")


def test_a_hotkey_list_file_is_reloaded_on_change_and_a_broken_one_keeps_the_last(tmp_path, caplog):
    path = tmp_path / "deny.txt"
    path.write_text(f"# validators we distrust\n{A}\n")
    hotkeys = HotkeyList(file=str(path), recheck=0)
    assert A in hotkeys and B not in hotkeys
    path.write_text(f"{B}  # swapped\n")
    assert B in hotkeys and A not in hotkeys
    path.write_text(f"{A}\nnot-a-hotkey\n")
    with caplog.at_level(logging.WARNING):
        assert B in hotkeys and A not in hotkeys
    assert "keeping the previous 1 hotkeys" in caplog.text and "line 2: 'not-a-hotkey'" in caplog.text


def test_a_deny_file_edited_while_serving_applies_without_restart(make_miner, client_for, tmp_path, hotkeys):
    deny = tmp_path / "deny.txt"
    deny.write_text("")
    with make_miner(f"blacklist.rules.deny_hotkeys.file={deny}", "cache.ttl=0") as miner:
        client = client_for(miner)
        assert client.prompt(["hello"]).status == 200
        deny.write_text(hotkeys["dev-validator"].ss58_address + "\n")
        deadline = time.monotonic() + 10
        while (reply := client.prompt(["hello"])).status == 200 and time.monotonic() < deadline:
            pass
    assert (reply.status, reply.reason) == (403, "deny_hotkeys: hotkey is on the deny list")


def test_the_rate_limit_answers_429_with_retry_after(make_miner, client_for):
    with make_miner("+blacklist.rules.rate_limit={requests: 2, window: 60}", "cache.ttl=0") as miner:
        client = client_for(miner)
        replies = [client.prompt([f"n{i}"]) for i in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert replies[2].headers["retry-after"] == "30"
    assert replies[2].reason == "more than 2 requests in 60 s; retry in 30 s"


def test_unsigned_requests_cannot_spend_a_validators_budget(make_miner, client_for, hotkeys):
    with make_miner("+blacklist.rules.rate_limit={requests: 2, window: 60}", "cache.ttl=0") as miner:
        client = client_for(miner)
        body = b'{"roles": ["user"], "messages": ["forged"]}'
        forged = {**client.signed_headers(body), "X-Bittensor-Signature": "0x" + "00" * 64}
        assert [client.send(body, forged).status for _ in range(5)] == [401] * 5
        assert client.prompt(["real"]).status == 200


def test_a_forged_claim_cannot_learn_that_a_validator_is_over_its_limit(make_miner, client_for):
    """Authenticate before telling: an over-limit validator's forged claim gets 401, not 429."""
    with make_miner("+blacklist.rules.rate_limit={requests: 2, window: 60}", "cache.ttl=0") as miner:
        client = client_for(miner)
        assert [client.prompt([f"spent {i}"]).status for i in range(2)] == [200, 200]
        body = b'{"roles": ["user"], "messages": ["forged"]}'
        forged = {**client.signed_headers(body), "X-Bittensor-Signature": "0x" + "00" * 64}
        refused = client.send(body, forged)
        real = client.prompt(["over"])
    assert (refused.status, refused.reason.split(":")[0]) == (401, "BadSignature")
    assert real.status == 429


def test_rate_limit_buckets_refill():
    limit, who = RateLimit(requests=1, window=0.05), caller(A)
    assert limit(who, GRAPH) is None  # an unverified claim is never refused by the rate limit
    limit.count(who)
    with pytest.raises(RateLimited):
        limit.count(who)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            limit.count(who)
            break
        except RateLimited:
            time.sleep(0.005)
    else:
        pytest.fail("the bucket never refilled")


@pytest.mark.parametrize("make", [lambda: TimeStake(max_callers=1000), lambda: RateLimit(requests=5, max_callers=1000)])
def test_per_caller_state_is_bounded_and_constant_time(make):
    """100,000 distinct hotkeys keep at most max_callers entries; the last ones are each O(1)."""
    policy = make()
    use = policy.count if isinstance(policy, RateLimit) else (lambda who: policy(who, GRAPH))
    for i in range(100_000):
        use(caller(f"5Stranger{i}"))
    assert len(policy) == 1000


def test_ip_rules_over_the_wire(make_miner, client_for):
    with make_miner("+blacklist.rules.deny_ips={networks: [127.0.0.0/8]}") as miner:
        assert client_for(miner).prompt(["x"]).reason == "deny_ips: address 127.0.0.1 is on the deny list"
    with make_miner("+blacklist.rules.allow_ips={networks: [127.0.0.1/32]}") as miner:
        assert client_for(miner).prompt(["x"]).status == 200


def test_an_open_policy_is_warned_about_at_start_up(make_miner, caplog):
    with caplog.at_level(logging.WARNING), make_miner("blacklist=open"):
        pass
    assert "The blacklist lets non-validators in" in caplog.text


def test_time_stake_ranks_a_quiet_caller_above_an_equal_one_in_a_burst():
    strategy = TimeStake(time_stake_multiplicate=1.0, history=2, max_idle=60)
    for _ in range(2):
        strategy(caller(A), GRAPH)
    busy, quiet = strategy(caller(A), GRAPH), strategy(caller(B), GRAPH)
    assert busy < by_stake(caller(A), GRAPH) + 1 and quiet == by_stake(caller(B), GRAPH) + 60



def test_a_high_stake_request_queued_last_runs_before_low_stake_ones(make_miner, client_for, hotkeys):
    prompts.served.clear()
    prompts.gate.clear()
    with make_miner("prompt._target_=tests.prompts.gated", "axon.max_concurrency=1", "blacklist=open",
                    "cache.ttl=0", "axon.request_timeout=30") as miner:
        threads = []

        def send(wallet: str, text: str) -> None:
            threads.append(threading.Thread(target=client_for(miner, wallet).prompt, args=([text],)))
            threads[-1].start()

        send("dev-validator", "gate")
        wait_until(lambda: prompts.served == ["gate"])
        for i in range(3):
            send("stranger", f"low{i}")
            wait_until(lambda: gauge(miner, "miner_queue_depth") == i + 1)
        send("dev-validator", "high")
        wait_until(lambda: gauge(miner, "miner_queue_depth") == 4)
        prompts.gate.set()
        for thread in threads:
            thread.join(30)
    assert prompts.served == ["gate", "high", "low0", "low1", "low2"]


def test_a_full_queue_is_503_and_a_deadline_passed_in_the_queue_is_504_without_running(make_miner, client_for):
    prompts.served.clear()
    prompts.gate.clear()
    with make_miner("prompt._target_=tests.prompts.gated", "axon.max_concurrency=1", "axon.max_queue=1",
                    "cache.ttl=0", "axon.request_timeout=3") as miner:
        holder = threading.Thread(target=client_for(miner).prompt, args=(["gate"],))
        holder.start()
        wait_until(lambda: prompts.served == ["gate"])
        queued = []
        waiter = threading.Thread(target=lambda: queued.append(client_for(miner).prompt(["waits"])))
        waiter.start()
        wait_until(lambda: gauge(miner, "miner_queue_depth") == 1)
        full = client_for(miner).prompt(["no room"])
        waiter.join(30)
        prompts.gate.set()
        holder.join(30)
    assert (full.status, full.error) == (503, "over capacity")
    assert queued[0].status == 504 and "no slot became free" in queued[0].reason
    assert prompts.served == ["gate"]


def test_reuse_computes_concurrent_identical_prompts_once(make_miner, client_for):
    prompts.served.clear()
    prompts.gate.clear()
    with make_miner("prompt._target_=tests.prompts.gated", "cache.on_hit=reuse") as miner:
        replies: list = []
        threads = [threading.Thread(target=lambda: replies.append(client_for(miner).prompt(["gate"])))
                   for _ in range(5)]
        for thread in threads:
            thread.start()
        wait_until(lambda: gauge(miner, "miner_inflight") == 5)
        prompts.gate.set()
        for thread in threads:
            thread.join(30)
    assert prompts.served == ["gate"]
    assert [r.completion for r in replies] == ["gate after 1 calls"] * 5


def _answered_by(hotkeys, port: int, words: str) -> str:
    """The pid of the worker that answers `words` on a new connection (tests.prompts.process_id)."""
    client = MinerClient(hotkeys["dev-validator"], port=port)
    try:
        return client.prompt([words]).completion.split()[0]
    finally:
        client.close()


def test_reject_serves_exactly_one_of_identical_prompts_across_two_workers(home, tmp_path, hotkeys):
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(home)}
    server = Running("axon.port=0", "axon.workers=2", "prompt._target_=tests.prompts.process_id", env=env,
                     cwd=tmp_path)
    try:
        port = int(server.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        server.wait_for(r"on http://127\.0\.0\.1:(\d+)")  # the second worker is up too
        clients = [MinerClient(hotkeys["dev-validator"], port=port) for _ in range(8)]  # 8 connections
        statuses: list[int] = []
        barrier = threading.Barrier(8)

        def send(client):
            barrier.wait()
            statuses.append(client.prompt(["only once, anywhere"]).status)

        threads = [threading.Thread(target=send, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        served_by = {_answered_by(hotkeys, port, f"who {i}") for i in range(20)}
        for client in clients:
            client.close()
    finally:
        assert server.stop() == 0
    assert sorted(statuses) == [200] + [409] * 7
    assert len(served_by) == 2  # both workers take connections


def test_two_miners_started_apart_on_one_home_share_the_duplicate_check(home, tmp_path, hotkeys):
    """The cache is SQLite on disk: processes that share it need no common parent."""
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(home)}
    first = Running("axon.port=0", env=env, cwd=tmp_path)
    second = Running("axon.port=0", env=env, cwd=tmp_path)
    try:
        ports = [int(m.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1)) for m in (first, second)]
        clients = [MinerClient(hotkeys["dev-validator"], port=port) for port in ports]
        asked = [client.prompt(["asked of both"]).status for client in clients]
        for client in clients:
            client.close()
    finally:
        assert second.stop() == 0 and first.stop() == 0
    assert asked == [200, 409]
