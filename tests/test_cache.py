"""The prompt cache is right: a key names what was asked and who answers, a claim names its
process, and a restart (clean or kill -9) keeps what was saved. Real diskcache, real processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import diskcache
import httpx
import pytest
import yaml

from declarative_miner.cache import LocalStore, PromptCache
from declarative_miner.cache.saved import SavedPrompts
from declarative_miner.cache.table import ANSWERED, COMPUTING, NEW, ClaimTable
from declarative_miner.client import MinerClient

from .conftest import wait_until
from .test_first_run import Running


def test_another_prompt_callable_never_answers_with_the_first_ones_completion(make_miner, client_for):
    with make_miner("cache.on_hit=reuse") as echo:
        assert client_for(echo).prompt(["shared words"]).completion == "shared words"
    with make_miner("cache.on_hit=reuse", "prompt._target_=tests.prompts.async_upper") as upper:
        assert client_for(upper).prompt(["shared words"]).completion == "SHARED WORDS"
    with make_miner("prompt._target_=tests.prompts.async_upper") as upper:  # reject: not a duplicate either
        assert client_for(upper).prompt(["asked of echo"]).status == 200
    with make_miner() as echo:
        client = client_for(echo)
        assert client.prompt(["asked of echo"]).status == 200
        assert client.prompt(["asked of echo"]).status == 409  # the same callable: a duplicate


def test_an_argument_of_the_prompt_callable_is_part_of_the_key(make_miner, client_for):
    with make_miner("cache.on_hit=reuse", "prompt._target_=tests.prompts.slow", "+prompt.seconds=0") as first:
        assert client_for(first).prompt(["same"]).completion == "slow same"
    with make_miner("prompt._target_=tests.prompts.slow", "+prompt.seconds=0.01") as second:
        assert client_for(second).prompt(["same"]).status == 200


def test_different_roles_are_different_prompts(make_miner, client_for):
    with make_miner() as miner:
        client = client_for(miner)
        assert client.prompt(["the same words"], roles=["system"]).status == 200
        assert client.prompt(["the same words"], roles=["user"]).status == 200
        assert client.prompt(["the same words"], roles=["user"]).status == 409


def test_scope_caller_counts_duplicates_per_validator(make_miner, client_for):
    with make_miner("blacklist=open") as miner:  # global, the default: another validator's repeat is a duplicate
        assert client_for(miner).prompt(["asked twice"]).status == 200
        assert client_for(miner, "small-validator").prompt(["asked twice"]).status == 409
    with make_miner("blacklist=open", "cache.scope=caller", "cache.directory=${home}/caller-cache") as miner:
        first, second = client_for(miner), client_for(miner, "small-validator")
        assert first.prompt(["asked twice"]).status == 200
        assert second.prompt(["asked twice"]).status == 200
        assert second.prompt(["asked twice"]).status == 409


@pytest.mark.parametrize("scope", ["global", "caller"])
def test_a_key_is_the_same_sha256_in_every_version(scope):
    """A saved prompt is found again only if its key is computed as it was: sha256 of the JSON list
    [namespace, type, inputs, caller], non-ASCII kept, keys sorted (a restart after an upgrade)."""
    cache = PromptCache(60, "reject", scope, '{"_target_": "ns.é"}', store=None)
    inputs = {"roles": ["user"], "messages": ["¿qué?"], "extra": {"b": 1, "a": [2.5, None]}}
    for asked in ("Prompting", "Other"):
        caller = "5Caller" if scope == "caller" else None
        listed = json.dumps([cache.namespace, asked, inputs, caller], ensure_ascii=False, sort_keys=True)
        assert cache.key(asked, inputs, "5Caller") == hashlib.sha256(listed.encode()).hexdigest()


def test_a_bad_scope_is_a_config_error(make_miner):
    from declarative_miner.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cache.scope: .*got everyone; expected global or caller"):
        make_miner("cache.scope=everyone")


def test_cache_clear_forgets_every_stored_prompt(make_miner, client_for):
    with make_miner() as miner:
        assert client_for(miner).prompt(["cleared"]).status == 200
    with make_miner("cache.clear=true") as miner:
        assert client_for(miner).prompt(["cleared"]).status == 200


def _claimed_in_child(table: ClaimTable, key: str) -> int:
    """A forked process that claims `key` and then waits to be killed; returns its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            assert table.claim(key, 0.0, 1e12) == NEW
            os.write(ready_w, b"1")
            signal.pause()
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    os.close(ready_w)
    return pid


def test_a_claim_of_a_killed_process_is_void_at_once_even_before_it_is_reaped():
    table, key = ClaimTable(1000), "ab" * 32
    pid = _claimed_in_child(table, key)
    assert table.claim(key, 0.0, 1e12) == COMPUTING  # its owner is alive
    os.kill(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    wait_until(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")  # a zombie now: killed, not reaped
    assert table.claim(key, 0.0, 1e12) == NEW
    os.waitpid(pid, 0)
    table.settle(key, 1e12)
    assert table.claim(key, 0.0, 1e12) == ANSWERED
    table.close()


def test_reuse_waiting_for_a_killed_owner_answers_itself(tmp_path):
    store = LocalStore(1000, str(tmp_path / "cache"), 2**30, False)
    cache = PromptCache(60, "reuse", "global", "test", store)
    cache.open()
    key = cache.key("Prompting", {"messages": ["x"]}, None)
    pid = _claimed_in_child(store.table, key)

    async def answer() -> str:
        return "answered here"

    async def waiting() -> str:
        await cache.start()
        try:
            return await asyncio.wait_for(cache.run(key, answer), timeout=10)
        finally:
            await cache.stop()

    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()  # while the waiter polls the claim
    assert asyncio.run(waiting()) == "answered here"
    os.waitpid(pid, 0)
    cache.close()
    cache.release_memory()


def test_a_full_table_makes_room_from_the_entries_closest_to_expiry():
    table = ClaimTable(8)  # one bucket
    keys = [f"{i:02x}" * 32 for i in range(9)]
    for i, key in enumerate(keys[:8]):
        assert table.claim(key, 0.0, 100.0 + i) == NEW
        table.settle(key, 100.0 + i)
    assert table.claim(keys[8], 0.0, 200.0) == NEW
    assert table.evicted == 1
    assert table.claim(keys[0], 0.0, 200.0) == NEW  # the one closest to expiry went
    assert table.claim(keys[7], 0.0, 200.0) == ANSWERED
    table.close()


def test_a_full_table_takes_an_expired_entry_before_evicting_a_fresh_one():
    table = ClaimTable(8)  # one bucket
    keys = [f"{i:02x}" * 32 for i in range(10)]
    for i, key in enumerate(keys[:8]):
        assert table.claim(key, 0.0, 100.0 if i == 5 else 300.0) == NEW
        table.settle(key, 100.0 if i == 5 else 300.0)
    assert table.claim(keys[8], 150.0, 400.0) == NEW  # in the place of keys[5], expired at 150
    assert table.evicted == 0
    assert [table.claim(key, 150.0, 400.0) for key in keys[:5] + keys[6:8]] == [ANSWERED] * 7
    table.release(keys[8])
    assert table.claim(keys[9], 150.0, 400.0) == NEW and table.evicted == 0  # in the slot released
    table.close()


@pytest.fixture
def two_workers(tmp_path, hotkeys, wallets_dir):
    def start(*overrides: str) -> tuple[Running, int]:
        (tmp_path / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
            {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
        env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
        miner = Running("axon.port=0", "axon.workers=2", f"wallet.path={wallets_dir}",
                        f"network.metagraph_file={tmp_path}/mg.yaml", *overrides, env=env, cwd=tmp_path)
        port = int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
        miner.wait_for(r"on http://127\.0\.0\.1:(\d+)")
        started.append(miner)
        return miner, port

    started: list[Running] = []
    yield start
    for miner in started:
        miner.stop(signal.SIGTERM)


@pytest.mark.parametrize("on_hit", ["reject", "reuse"])
def test_a_killed_workers_claims_are_void(two_workers, hotkeys, tmp_path, on_hit):
    gate = tmp_path / "gate"
    miner, port = two_workers(f"cache.on_hit={on_hit}", "prompt._target_=tests.prompts.waits_for_file",
                              f"+prompt.path={gate}")
    client = MinerClient(hotkeys["dev-validator"], port=port)
    lost = []

    def ask() -> None:
        try:
            lost.append(client.prompt(["the killed one"]))
        except httpx.HTTPError as exc:  # the worker died under it
            lost.append(exc)

    stuck = threading.Thread(target=ask, daemon=True)
    stuck.start()
    started = tmp_path / "gate.started"
    wait_until(lambda: started.exists() and started.read_text())
    os.kill(int(started.read_text()), signal.SIGKILL)  # mid-prompt, its claim still pending
    stuck.join(timeout=15)
    assert isinstance(lost[0], httpx.HTTPError)
    gate.touch()
    retry = MinerClient(hotkeys["dev-validator"], port=port)
    reply = retry.prompt(["the killed one"])
    assert (reply.status, reply.completion) == (200, "after the killed one")
    assert retry.prompt(["the killed one"]).status == (409 if on_hit == "reject" else 200)
    client.close()
    retry.close()


def _metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_after_kill_9_a_restart_keeps_every_saved_answer(two_workers, hotkeys):
    miner, port = two_workers()
    clients = [MinerClient(hotkeys["dev-validator"], port=port) for _ in range(4)]
    try:
        _asked_again_after_kill_9(two_workers, hotkeys, miner, port, clients)
    finally:
        for client in clients:
            client.close()


def _asked_again_after_kill_9(two_workers, hotkeys, miner, port, clients) -> None:
    asked = [f"kept across kill -9: {i}" for i in range(20)]
    assert [clients[i % 4].prompt([words]).status for i, words in enumerate(asked)] == [200] * 20
    # each worker reports its own queue: both must say 0, so ask until both pids have
    clean = set()
    wait_until(lambda: (h := httpx.get(f"http://127.0.0.1:{port}/health", headers={"connection": "close"}).json())
               and _metric(port, "miner_cache_unsaved") == 0 and not clean.add(h["pid"]) and len(clean) >= 2)
    miner.proc.kill()  # the supervisor: SIGKILL, no clean stop
    miner.proc.wait()
    for pid in clean:
        try:
            os.kill(pid, signal.SIGKILL)  # its workers die with it, as after a crash of the machine
        except ProcessLookupError:
            pass
    again, port = two_workers()
    client = MinerClient(hotkeys["dev-validator"], port=port)
    clients.append(client)

    def past_the_crash_fence() -> bool:
        # The whole miner crashed, replay store included: requests signed within a few seconds of the
        # crash are refused (server/replay.py), and a validator asks again.
        reply = client.prompt([asked[0]])
        assert reply.status != 401 or "restarted after a crash" in reply.reason, reply.reason
        return reply.status != 401

    wait_until(past_the_crash_fence)
    assert {client.prompt([words]).status for words in asked} == {409}
    assert "Restored 20 prompts" in "".join(again.seen)


def test_a_restart_reads_the_batches_alone_never_every_completion(tmp_path, monkeypatch):
    """diskcache's key iteration slows with the square of the entries (over 10^6 completions it had
    not finished in 17 minutes), so a restart must not walk the completions to find what was answered."""
    directory = str(tmp_path / "cache")
    saved = SavedPrompts(directory, 2**30, False)
    saved.start()
    keys = [f"{i:064x}" for i in range(50)]
    for i, key in enumerate(keys):
        saved.save(key, f"completion {i}", time.time() + 600)
    saved.close()
    walked, iterkeys = [], diskcache.Cache.iterkeys

    def recorded(cache: diskcache.Cache, *args):
        walked.append(cache.directory)
        return iterkeys(cache, *args)
    monkeypatch.setattr(diskcache.Cache, "iterkeys", recorded)
    again = SavedPrompts(directory, 2**30, False)
    assert sorted(key for key, _ in again.entries()) == [key[:32] for key in keys]
    assert again.read(keys[7]) == "completion 7"
    again.close()
    assert directory not in walked, walked  # only the batches' own cache
