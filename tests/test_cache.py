"""The prompt cache is right: a key names what was asked and who answers, a claim names its
process, and a restart (clean or kill -9) keeps what was saved. Real diskcache, real processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from declarative_miner.cache import PromptCache
from declarative_miner.state.disk import DiskPrompts
from declarative_miner.state.memory import MemoryPrompts
from declarative_miner.state.prompts import ANSWERED, COMPUTING, NEW
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


def _claimed_in_child(prompts: DiskPrompts, key: str) -> int:
    """A forked process that claims `key` and then waits to be killed; returns its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            prompts.open()  # its own connection, as a worker opens its own
            assert prompts.claim(key) == NEW
            os.write(ready_w, b"1")
            signal.pause()
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    os.close(ready_w)
    return pid


def test_a_claim_of_a_killed_process_is_void_at_once_even_before_it_is_reaped(tmp_path):
    prompts, key = DiskPrompts(tmp_path / "cache", lease=600, size_limit=2**30, sync_writes=False), "ab" * 32
    prompts.open()
    pid = _claimed_in_child(prompts, key)
    assert prompts.claim(key) == COMPUTING  # its owner is alive
    os.kill(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    wait_until(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")  # a zombie now: killed, not reaped
    assert prompts.claim(key) == NEW
    os.waitpid(pid, 0)
    prompts.settle(key, "", 600)
    assert prompts.claim(key) == ANSWERED
    prompts.close()


def test_a_claim_lapses_with_its_lease_whoever_holds_it(tmp_path):
    prompts, key = DiskPrompts(tmp_path / "cache", lease=0.2, size_limit=2**30, sync_writes=False), "cd" * 32
    prompts.open()
    pid = _claimed_in_child(prompts, key)
    try:
        assert prompts.claim(key) == COMPUTING
        wait_until(lambda: prompts.claim(key) == NEW)  # alive, but its lease is over
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        prompts.close()


def test_reuse_waiting_for_a_killed_owner_answers_itself(tmp_path):
    store = DiskPrompts(tmp_path / "cache", lease=600, size_limit=2**30, sync_writes=False)
    store.open()
    cache = PromptCache(60, "reuse", "global", "test", store)
    key = cache.key("Prompting", {"messages": ["x"]}, None)
    pid = _claimed_in_child(store, key)

    async def answer() -> str:
        return "answered here"

    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()  # while the waiter polls the claim
    assert asyncio.run(asyncio.wait_for(cache.run(key, answer), timeout=10)) == "answered here"
    os.waitpid(pid, 0)
    store.close()


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_a_live_claim_is_never_evicted_however_many_answers_come(tmp_path, store):
    prompts = MemoryPrompts(max_entries=10) if store == "memory" else \
        DiskPrompts(tmp_path / "cache", lease=600, size_limit=100_000, sync_writes=False)
    prompts.open()
    assert prompts.claim("live") == NEW
    for i in range(200):  # far more answers than the store keeps (10 entries; 100 kB)
        assert prompts.claim(f"answer {i}") == NEW
        prompts.settle(f"answer {i}", "x" * 2000, 600)
    if store == "disk":
        prompts._answers.cull()
    assert prompts.claim("live") == COMPUTING
    assert prompts.read("answer 0") is None  # the oldest answers made room
    prompts.close()


def test_a_streamed_duplicate_under_reuse_follows_the_answer_being_produced():
    """One answer, produced once: a duplicate arriving mid-stream gets the chunks so far, then each as
    it comes; a plain duplicate gets the whole."""
    async def run() -> tuple[list, list, str]:
        cache = PromptCache(60, "reuse", "global", "test", MemoryPrompts(10))
        key, produced, go_on = cache.key("StreamPrompting", {"messages": ["x"]}, None), [], asyncio.Event()

        async def produce():
            for chunk in ("one ", "two ", "three"):
                produced.append(chunk)
                yield chunk
                if chunk == "one ":
                    await go_on.wait()

        first, second = [], []

        async def owner():
            async for chunk in cache.stream(key, produce):
                first.append(chunk)

        async def duplicate():
            async for chunk in cache.stream(key, produce):
                second.append(chunk)

        owning = asyncio.create_task(owner())
        while not first:
            await asyncio.sleep(0)
        following = asyncio.create_task(duplicate())
        plain = asyncio.create_task(cache.run(key, lambda: None))
        await asyncio.sleep(0.01)
        go_on.set()
        await asyncio.gather(owning, following)
        return produced, second, await plain

    produced, second, plain = asyncio.run(run())
    assert produced == ["one ", "two ", "three"]  # produced once
    assert second == ["one ", "two ", "three"] and plain == "one two three"


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


def test_after_kill_9_a_restart_keeps_every_answer(two_workers, hotkeys):
    """Each answer is in SQLite once its request is answered: a crash of the whole miner loses none."""
    miner, port = two_workers()
    client = MinerClient(hotkeys["dev-validator"], port=port)
    asked = [f"kept across kill -9: {i}" for i in range(20)]
    assert [client.prompt([words]).status for words in asked] == [200] * 20
    client.close()
    workers = [int(child) for task in Path(f"/proc/{miner.proc.pid}/task").iterdir()
               for child in (task / "children").read_text().split()]
    miner.proc.kill()  # the supervisor and its workers: SIGKILL, no clean stop, as a crash of the machine
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    miner.proc.wait()
    again, port = two_workers()
    client = MinerClient(hotkeys["dev-validator"], port=port)
    try:
        assert {client.prompt([words]).status for words in asked} == {409}
    finally:
        client.close()
