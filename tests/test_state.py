"""State the processes of one machine share (state.store=disk): a process killed while it holds the
store's lock, or in the middle of a write, wedges nobody. Real forked processes, real SQLite."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from declarative_miner.state.disk import DiskCells, DiskNonces, DiskPrompts
from declarative_miner.state.prompts import NEW

pytestmark = pytest.mark.slow


def _child(work) -> tuple[int, int]:
    """Fork a process running `work(ready)`, where `ready()` tells the parent it got that far.
    Returns (pid, the read end the parent waits on)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            work(lambda: os.write(ready_w, b"1"))
        finally:
            os._exit(0)
    os.close(ready_w)
    return pid, ready_r


def _stores(tmp_path):
    return (DiskNonces(tmp_path / "nonces", 60.0), DiskPrompts(tmp_path / "cache", 600.0, 2**30, False),
            DiskCells(tmp_path / "limits"))


def test_a_process_killed_while_holding_the_stores_write_lock_wedges_nobody(tmp_path):
    """The finding: a lock held by the dead (a POSIX semaphore is never released). SQLite's lock is the
    kernel's: once the holder is killed, the next writer gets it at once."""
    nonces, prompts, cells = _stores(tmp_path)

    def hold_the_lock(ready) -> None:
        cells.open()
        with cells._cache.transact():  # BEGIN IMMEDIATE: every other writer must wait
            cells._cache.set("held", 1)
            ready()
            signal.pause()  # killed here, the transaction open

    cells.open()  # before the child holds the lock: opening writes too
    pid, ready = _child(hold_the_lock)
    try:
        assert os.read(ready, 1) == b"1"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    started = time.monotonic()
    assert cells.admit("validator", 1.0, 10.0) == 0.0  # would raise Unavailable after 2 s if wedged
    assert time.monotonic() - started < 1.0
    assert cells._cache.get("held") is None  # the dead one's write was rolled back
    cells.close()


def test_processes_killed_at_random_moments_mid_write_leave_the_others_serving(tmp_path):
    """Writers of every kind of state, killed at random moments 20 times: the parent's own writes keep
    going, none fails, and what it wrote is all there."""
    rng = random.Random(7)

    def write_forever(ready) -> None:
        nonces, prompts, cells = _stores(tmp_path)
        for store in (nonces, prompts, cells):
            store.open()
        ready()
        i = 0
        while True:
            i += 1
            nonces.check_and_store("5Child", os.getpid() * 10**6 + i)
            if prompts.claim(f"child {os.getpid()} {i}") == NEW:
                prompts.settle(f"child {os.getpid()} {i}", "answer", 600)
            cells.admit(f"child {i % 50}", 0.001, 1.0)

    nonces, prompts, cells = _stores(tmp_path)
    for store in (nonces, prompts, cells):
        store.open()
    sent = 0
    for kill in range(20):
        pid, ready = _child(write_forever)
        assert os.read(ready, 1) == b"1", "the writer did not start"
        deadline = time.monotonic() + rng.uniform(0.005, 0.1)
        while time.monotonic() < deadline:  # the parent writes too, while the child is killed mid-write
            sent += 1
            assert nonces.check_and_store("5Parent", sent)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        key = f"parent {kill}"
        assert prompts.claim(key) == NEW
        prompts.settle(key, f"answer {kill}", 600)
    assert [prompts.read(f"parent {kill}") for kill in range(20)] == [f"answer {kill}" for kill in range(20)]
    for store in (nonces, prompts, cells):
        store.close()


def test_rate_limit_budgets_spent_in_other_processes_are_one_budget(tmp_path):
    cells = DiskCells(tmp_path / "limits")

    def spend(ready) -> None:  # a burst of two, then one request per 10 s
        cells.open()
        ready() if cells.admit("5Caller", 10.0, 10.0) == 0 else None

    admitted = []
    for _ in range(3):
        pid, ready = _child(spend)
        admitted.append(os.read(ready, 1) == b"1")
        os.waitpid(pid, 0)
    cells.open()
    assert admitted == [True, True, False]
    assert cells.admit("5Caller", 10.0, 10.0) > 0
    assert cells.admit("5Other", 10.0, 10.0) == 0
    cells.close()


def test_a_nonce_accepted_in_one_process_is_a_replay_in_another_and_after_a_restart(tmp_path):
    nonces = DiskNonces(tmp_path / "nonces", 60.0)

    def accept(ready) -> None:
        nonces.open()
        ready() if nonces.check_and_store("5Caller", 1) else None

    results = []
    for _ in range(2):
        pid, ready = _child(accept)
        results.append(os.read(ready, 1) == b"1")
        os.waitpid(pid, 0)
    assert results == [True, False]
    again = DiskNonces(tmp_path / "nonces", 60.0)  # a new start: the store outlives every process
    again.open()
    assert not again.check_and_store("5Caller", 1)
    again.close()
