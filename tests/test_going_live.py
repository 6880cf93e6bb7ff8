"""Going live as an operator does, from the command line: the live-network guards, validate as strict
as serving, btcli lines that run, and the smaller things an operator meets on the first day."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest

from .conftest import run_cli
from .test_first_run import Running

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _problems(result) -> list[str]:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]


def test_a_live_network_with_the_dev_defaults_is_refused_with_every_problem_at_once(home, tmp_path):
    problems = _problems(run_cli(f"home={home}", "network=finney", cwd=tmp_path))
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["network.netuid", "wallet.path", "axon.ip"], problems
    assert "network.netuid=N" in problems[0] and "wallet=bittensor" in problems[1]
    assert "axon.external_ip=YOUR.PUBLIC.IP" in problems[2]


def test_publishing_a_private_address_is_refused_but_a_loopback_bind_behind_a_proxy_is_not(home, tmp_path,
                                                                                        wallets_dir):
    own = [f"home={home}", "network=test", "network.netuid=9", f"wallet.path={wallets_dir}", "wallet.name=stranger"]
    private = _problems(run_cli(*own, "axon.external_ip=10.1.2.3", "mode=validate", cwd=tmp_path))
    assert private[0].startswith("axon.external_ip: not a public address (got 10.1.2.3")
    behind_proxy = run_cli(*own, "axon.ip=127.0.0.1", "axon.external_ip=93.184.216.34", "mode=validate",
                           cwd=tmp_path, timeout=60)
    assert "axon.external_ip" not in behind_proxy.stderr and "axon.ip" not in behind_proxy.stderr
    assert "network.name: cannot read netuid 9 from test" in behind_proxy.stderr  # it got as far as the chain


def test_validate_opens_the_wallet_serving_would_open(home, tmp_path):
    result = run_cli(f"home={home}", "wallet=bittensor", "wallet.name=nosuch", "mode=validate", cwd=tmp_path)
    [problem] = _problems(result)
    assert problem.startswith("wallet.hotkey: no hotkey file at ")


@pytest.mark.parametrize("key", ["axon.port", "metrics.port"])
def test_validate_refuses_a_port_another_process_holds(home, tmp_path, key):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        [problem] = _problems(run_cli(f"home={home}", f"{key}={port}", "mode=validate", cwd=tmp_path))
    assert problem.startswith(f"{key}: cannot listen on 127.0.0.1:{port}")


def test_validate_notes_the_ports_its_own_running_miner_holds(home, tmp_path):
    miner = Running(f"home={home}", env=dict(os.environ), cwd=tmp_path)
    try:
        metrics = miner.wait_for(r"Metrics for Prometheus at http://[\d.]+:(\d+)/").group(1)
        ports = miner.wait_for(r" on http://[\d.]+:(\d+) ").group(1), metrics
        result = run_cli(f"home={home}", f"axon.port={ports[0]}", f"metrics.port={ports[1]}", "mode=validate",
                         cwd=tmp_path)
    finally:
        miner.stop()
    assert result.returncode == 0, result.stderr
    for key, port in zip(("axon.port", "metrics.port"), ports):
        assert f"{key} {port} is held by this home's running miner" in result.stdout


def test_validate_finds_a_model_without_loading_its_weights(home, tmp_path, tiny_model):
    found = run_cli(f"home={home}", "+recipe=llama", f"prompt.model={tiny_model}", "mode=validate", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "found, not loaded" in found.stdout and "Loaded " not in found.stderr + found.stdout
    missing = _problems(run_cli(f"home={home}", "+recipe=llama", f"prompt.model={tmp_path}/nothing", "mode=validate",
                                cwd=tmp_path))
    assert missing[0].startswith("prompt.model: no model there")


def test_a_sweep_checks_every_job_before_any_runs(tmp_path):
    home = tmp_path / "home"
    (home / "conf").mkdir(parents=True)  # an own config directory: on the search path, not in the jobs' names
    # The llama recipe's hub model is in no cache here, and the tests' hub is offline.
    result = run_cli("-m", f"home={home}", "mode=eval", "+recipe=echo,llama", "cache.ttl=0,30", "eval.relevance=false",
                     cwd=tmp_path)
    problems = _problems(result)
    assert len(problems) == 2 and "+recipe=llama cache.ttl=0 " in problems[0] and \
        "+recipe=llama cache.ttl=30 " in problems[1], problems
    assert all("prompt.model: cannot load it" in p for p in problems)
    assert "hydra.searchpath" not in result.stderr
    assert not list((home / "sweeps").glob("*/*/*/metrics.json"))  # no job ran


def test_a_sweep_whose_job_fails_still_writes_the_summary_of_the_others_and_names_the_failure(home, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"messages": ["hello there"], "reference": "hello"}) + "\n")
    result = run_cli("-m", f"home={home}", "mode=eval", "+recipe=echo", f"eval.dataset={data},{tmp_path}/gone.jsonl",
                     "eval.relevance=false", cwd=tmp_path, timeout=180)
    assert result.returncode == 2 and "job 1 has problems" in result.stderr  # the sweep's failure too
    [summary] = (home / "sweeps").glob("*/*/summary.csv")
    with summary.open() as table:
        rows = list(csv.DictReader(table))
    assert [row["answered"] for row in rows] == ["1", ""]
    assert rows[1]["errors"].startswith("failed: ") and "gone.jsonl" in rows[1]["errors"]


def test_an_api_key_in_the_config_points_to_the_environment(home, tmp_path):
    [problem] = _problems(run_cli(f"home={home}", "+recipe=openai", "+prompt.api_key=sk-123", "mode=validate",
                                  cwd=tmp_path))
    assert problem.startswith("prompt.api_key: a key is never written in the config") and "OPENAI_API_KEY" in problem
    assert "sk-123" not in problem


def test_a_misspelt_prompt_argument_lists_the_arguments_there_are(home, tmp_path):
    [problem] = _problems(run_cli(f"home={home}", "+recipe=llama", "prompt.temprature=0.5", cwd=tmp_path))
    assert problem.startswith("prompt.temprature: unknown key (got temprature; expected one of ")
    assert "temperature" in problem


def test_version_is_the_miners_and_the_license_ships(tmp_path):
    from importlib.metadata import version

    result = run_cli("--version", cwd=tmp_path)
    assert result.stdout.strip() == f"declarative-miner {version('declarative-miner')}"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
