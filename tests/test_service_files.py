"""The service files in deploy/ against the miner's stop bound: each manager waits longer after SIGTERM
than a stop may take (schema.AxonConfig.stop_bound), so no request in flight is killed. Checked from
the files where the manager cannot run here (systemd, Docker); pm2 runs, from npm."""

from __future__ import annotations

import configparser
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from declarative_miner.chain import dev
from declarative_miner.client import MinerClient
from declarative_miner.schema import AxonConfig

from .conftest import wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ROOT = DEPLOY.parent
# What the shipped files must outlast: the default config's stop, with workers (the longer one).
BOUND = AxonConfig(workers=2).stop_bound


def seconds(text: str) -> float:
    """A duration as systemd and compose write it: 30, 30s, 1min 30s, 1m30s."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert parts, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(DEPLOY / "systemd" / name)
    return parser["Service"]


@pytest.mark.parametrize("name", ["declarative-miner.service", "declarative-miner@.service"])
def test_the_systemd_units_wait_past_the_stop_bound_and_restart_on_failure_only(name):
    service = unit(name)
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > BOUND
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a bad config: restarting cannot fix it
    assert service["NoNewPrivileges"] == "true"
    assert service["EnvironmentFile"].startswith("/etc/")  # secrets out of the unit
    assert "WorkingDirectory" not in service  # nothing depends on it
    executable = service["ExecStart"].split()[0]
    assert executable.startswith("/"), "systemd needs an absolute path"
    assert int(service["LimitNOFILE"]) >= AxonConfig().max_connections + 256  # the miner's own need
    # The unit names the home, under the directory systemd makes writable for it; the environment file
    # must not (it would override the unit's, and send every template instance to one directory).
    home = service["Environment"].removeprefix("DECLARATIVE_MINER_HOME=")
    assert home == "/var/lib/" + service["StateDirectory"]
    example = (DEPLOY / "systemd" / "miner.env.example").read_text()
    assert not re.search(r"^DECLARATIVE_MINER_HOME=", example, re.M)
    assert re.search(r"^MINER_ARGS=", example, re.M)


def test_the_pm2_file_waits_past_the_stop_bound():
    shown = subprocess.run(["node", "-e", "console.log(JSON.stringify(require(process.argv[1]).apps))",
                            str(DEPLOY / "pm2" / "ecosystem.config.js")], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MINER_ARGS": "+recipe=echo"})
    assert shown.returncode == 0, shown.stderr
    (app,) = json.loads(shown.stdout)
    assert app["kill_timeout"] / 1000 > BOUND  # pm2's default, 1.6 s, kills requests in flight
    assert 2 in app["stop_exit_codes"] and 75 not in app["stop_exit_codes"]  # a chain down at start: retried
    empty = subprocess.run(["node", "-e", "require(process.argv[1])", str(DEPLOY / "pm2" / "ecosystem.config.js")],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "MINER_ARGS": ""})
    assert empty.returncode != 0 and "MINER_ARGS is empty" in empty.stderr  # never the dev miner by mistake


def test_the_docker_files_stop_with_sigterm_past_the_stop_bound_and_check_health():
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*?)$", dockerfile, re.M | re.S)
    assert healthcheck and "/health" in healthcheck.group(1)
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    miner = compose["services"]["miner"]
    assert seconds(miner["stop_grace_period"]) > BOUND  # Docker's default, 10 s, is less than the drain
    assert miner.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert re.fullmatch(r"on-failure:\d+", miner["restart"])  # a bad config (exit 2) does not loop forever
    assert "127.0.0.1:9464:9464" in miner["ports"]  # metrics reach the host, on its loopback only
    assert "metrics.host=0.0.0.0" in miner["command"]


def test_validate_names_the_stop_bound(make_miner):
    assert "SIGTERM drains within 13 s" in make_miner("axon.request_timeout=12").summary()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pm2_stopping_a_miner_mid_request_with_the_shipped_file_loses_nothing(pm2, home, hotkeys, tmp_path):
    """pm2 stop sends SIGTERM; with the shipped kill_timeout it waits for the drain, so the request in
    flight is answered. pm2's default (1.6 s) SIGKILLs it: the prompt below is held 3 s past SIGTERM."""
    port, gate = free_port(), tmp_path / "gate"
    env = {**os.environ, "PM2_HOME": str(tmp_path / "pm2"), "PYTHONPATH": str(ROOT),
           "MINER_ARGS": f"home={home} axon.port={port} metrics.port=null prompt._target_=tests.prompts.waits_for_file "
                         f"+prompt.path={gate} hydra.run.dir={tmp_path / 'run'}"}

    def pm2_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(pm2), *args], env=env, capture_output=True, text=True, timeout=timeout)

    started = pm2_run("start", str(DEPLOY / "pm2" / "ecosystem.config.js"))
    assert started.returncode == 0, started.stdout + started.stderr
    replies, stopping = [], None
    try:
        wait_until(lambda: _answers(port), timeout=60)
        client = MinerClient(hotkeys[dev.DEV_VALIDATOR], "127.0.0.1", port, receiver=hotkeys["dev-miner"].ss58_address)
        asking = threading.Thread(target=lambda: replies.append(client.prompt(["finish me"])))
        asking.start()
        wait_until(lambda: Path(f"{gate}.started").exists())
        stopping = subprocess.Popen([str(pm2), "stop", "declarative-miner"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: not _answers(port))  # SIGTERM arrived: the listener is closed first
        with pytest.raises(subprocess.TimeoutExpired):
            stopping.wait(timeout=3)  # pm2 still waits for the drain
        gate.touch()
        said = stopping.communicate(timeout=60)[0]
        assert stopping.returncode == 0, said
        asking.join(30)
        client.close()
    finally:
        gate.touch()
        if stopping is not None and stopping.returncode is None:
            stopping.kill()
            stopping.communicate()
        pm2_run("kill")
    assert (replies[0].status, replies[0].completion) == (200, "after finish me")


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
