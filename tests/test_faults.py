"""Faults around the miner: a full or read-only disk under the prompt cache costs its disk copy, never
the service or the duplicate check (which falls back to the process's memory)."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest



@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs), so "disk full" is the kernel's answer, not a mock."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines have it)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(directory) -> None:
    with open(directory / "ballast", "wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_degrades_the_cache_and_every_request_is_still_served(make_miner, client_for, tiny_disk, caplog):
    with make_miner(f"cache.directory={tiny_disk}/cache") as miner:
        client = client_for(miner)
        assert client.prompt(["before"]).status == 200  # on disk once answered
        _fill(tiny_disk)
        with caplog.at_level(logging.WARNING):
            replies = [client.prompt([f"while full {i} " + "x" * 2000]) for i in range(20)]
            assert [r.status for r in replies] == [200] * 20
            assert client.prompt(["while full 0 " + "x" * 2000]).status == 409  # duplicates are still caught
        assert "prompt cache write failed, serving without it" in caplog.text
        (tiny_disk / "ballast").unlink()
        assert client.prompt(["after"]).status == 200
    with make_miner(f"cache.directory={tiny_disk}/cache") as miner:  # what was saved once there was room
        client = client_for(miner)
        assert client.prompt(["after"]).status == 409
        assert client.prompt(["before"]).status == 409


def test_a_cache_on_a_read_only_filesystem_is_refused_loudly_and_serving_goes_on(make_miner, client_for, tiny_disk,
                                                                                  tmp_path, caplog):
    (tiny_disk / "cache").mkdir()
    view = tmp_path / "read-only"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(tiny_disk), str(view)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    try:
        with caplog.at_level(logging.ERROR), make_miner(f"cache.directory={view}/cache") as miner:
            replies = [client_for(miner).prompt(["same"]) for _ in range(2)]
    finally:
        subprocess.run(["umount", "-l", str(view)], check=True)
    assert [r.status for r in replies] == [200, 409]  # served, duplicates caught; the log says a restart forgets
    assert "SERVING WITHOUT SAVING IT" in caplog.text
