"""A live network through bittensor 11's real `Subtensor`, over an in-memory `Substrate`."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import bittensor as bt
import httpx
import pytest

from declarative_miner.config import compose
from declarative_miner.errors import ConfigError
from declarative_miner.miner import Miner

from .conftest import gauge, run_cli, wait_until
from .fake_substrate import ChainNeuron, FakeSubstrate, encoded


@pytest.fixture
def chain(hotkeys) -> FakeSubstrate:
    return FakeSubstrate(netuid=3, neurons=[
        ChainNeuron(hotkeys["dev-miner"].ss58_address, stake=12.5, incentive=6553),
        ChainNeuron(hotkeys["dev-validator"].ss58_address, stake=50_000, validator_permit=True),
    ])


@pytest.fixture
def live_miner(home, chain, wallets_dir):
    built, subtensors = [], []

    def make(*overrides: str) -> Miner:
        cfg = compose([f"home={home}", "network=local", "network.netuid=3", f"wallet.path={wallets_dir}",
                       "wallet.name=dev-miner", "axon.port=0", "metrics.port=0", "axon.external_ip=203.0.113.7", *overrides])
        subtensors.append(bt.Subtensor("local", substrate=chain))
        built.append(Miner(cfg, subtensor=subtensors[-1]))
        return built[-1]

    yield make
    for miner in built:
        miner.close()
    for subtensor in subtensors:
        subtensor.close()
        # bittensor 11.3 stops its private event loop without closing it (a ResourceWarning
        # at garbage collection, which this suite treats as an error).
        if subtensor._loop_thread is not None:
            subtensor._loop_thread._loop.close()



def test_a_registered_miner_reads_the_metagraph_and_logs_its_standing(live_miner, client_for, caplog):
    with caplog.at_level(logging.INFO):
        miner = live_miner()
    assert "uid 0, stake 12.500000000α₃, incentive 0.099992, emission 1.000000000α₃" in caplog.text
    with miner:
        assert client_for(miner).prompt(["on chain"]).completion == "on chain"
        assert client_for(miner, "stranger").prompt(["x"]).reason == "registered: hotkey is not registered on netuid 3"
        health = miner.health()
    assert (health["uid"], health["registered"], health["network"]) == (0, True, "local")


def test_an_unregistered_hotkey_exits_naming_the_hotkey_the_netuid_and_how_to_register(live_miner, hotkeys, chain):
    chain.neurons.pop(0)
    with pytest.raises(ConfigError) as caught:
        live_miner()
    [problem] = caught.value.problems
    assert problem.key == "wallet.hotkey"
    assert f"hotkey {hotkeys['dev-miner'].ss58_address} is not registered on netuid 3" in problem.message
    command = re.search(r"`(btcli [^`]+)`", problem.message).group(1)
    assert command.startswith("btcli subnets register --netuid 3 --network local --wallet dev-miner "
                              "--wallet-hotkey default --wallet-path "), command
    assert_btcli_takes(command)


def test_the_endpoint_is_published_signed_by_the_hotkey_only_when_it_differs(live_miner, chain, hotkeys):
    miner = live_miner("axon.external_port=9000")
    with miner:
        pass
    [(call, signer, signature)] = chain.submitted
    assert (call.module, call.function) == ("SubtensorModule", "serve_axon")
    assert (call.params["ip"], call.params["port"], call.params["netuid"]) == (3405803783, 9000, 3)
    assert signer == hotkeys["dev-miner"].ss58_address
    assert hotkeys["dev-miner"].verify(encoded(call), signature)  # this very call, signed by the hotkey
    with live_miner("axon.external_port=9000"):
        pass
    assert len(chain.submitted) == 1  # already on chain: nothing sent
    with live_miner("axon.external_port=9001", "network.publish_axon=false"):
        pass
    assert len(chain.submitted) == 1


def test_resync_picks_up_new_validators_without_a_request_reading_the_chain(live_miner, chain, client_for, hotkeys):
    with live_miner("network.sync_interval=0.1") as miner:
        assert client_for(miner, "small-validator").prompt(["hi"]).status == 403
        chain.neurons.append(ChainNeuron(hotkeys["small-validator"].ss58_address, stake=5000, validator_permit=True))
        wait_until(lambda: miner.metagraph.by_hotkey(hotkeys["small-validator"].ss58_address) is not None)
        assert client_for(miner, "small-validator").prompt(["hi"]).status == 200


def test_an_unreachable_chain_keeps_the_last_snapshot_then_fails_closed_until_a_sync_works(
        live_miner, chain, client_for, caplog):
    # The first refresh fails 0.1 s in; the snapshot stays trusted for 3 s: ample to be served on it.
    with live_miner("network.sync_interval=0.1", "network.max_snapshot_age=3", "cache.ttl=0") as miner:
        client = client_for(miner)
        chain.reachable = False
        with caplog.at_level(logging.WARNING):
            wait_until(lambda: "metagraph refresh failed, serving on the snapshot" in caplog.text)
        assert client.prompt(["still"]).status == 200
        wait_until(lambda: miner.metagraph.age > 3)
        closed = client.prompt(["closed"])
        assert (closed.status, closed.error) == (503, "unavailable")
        assert closed.reason.startswith("the metagraph is ") and closed.headers["retry-after"] == "5"
        assert "(bound 3 s): refreshing it failed (" in closed.reason  # the truth: a refresh was tried
        chain.reachable = True
        wait_until(lambda: miner.metagraph.age < 3)
        assert client.prompt(["open again"]).status == 200


def test_an_unreachable_chain_at_start_is_a_clear_error(live_miner, chain):
    chain.reachable = False
    with pytest.raises(ConfigError, match="network.name: cannot read netuid 3 from local"):
        live_miner()


def test_a_public_bind_with_no_address_found_names_the_key_before_dialling_the_chain(home, tmp_path, monkeypatch):
    """No axon.external_ip and a bind to every interface: the public address is asked of echo
    services (here one that answers garbage, and one that is down), and failing that, the key is named."""
    from declarative_miner.chain import public_address
    from declarative_miner.wallet import create_wallet

    create_wallet("dev-miner", "default", str(tmp_path))
    with _echo_service("not an address") as garbage:
        monkeypatch.setattr(public_address, "SERVICES", (garbage, "http://127.0.0.1:9/down"))
        with pytest.raises(ConfigError) as caught:
            Miner(compose([f"home={home}", "network=finney", "network.netuid=3", f"wallet.path={tmp_path}",
                           "axon=public"]))
    [problem] = caught.value.problems
    assert problem.key == "axon.external_ip" and "could not be found" in problem.message


def test_a_public_bind_publishes_the_address_the_echo_service_reports(live_miner, chain, monkeypatch):
    from declarative_miner.chain import public_address

    with _echo_service("93.184.216.34") as echo:
        monkeypatch.setattr(public_address, "SERVICES", (echo,))
        with live_miner("axon=public", "axon.port=0", "axon.external_ip=null", "axon.external_port=9000"):
            pass
    [(call, _, _)] = chain.submitted
    assert (call.params["ip"], call.params["port"]) == (int(ipaddress.ip_address("93.184.216.34")), 9000)


@contextlib.contextmanager
def _echo_service(answer: str):
    """An HTTP server on loopback answering every GET with `answer`, as api.ipify.org does."""
    import http.server

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_an_encrypted_hotkey_is_explained_and_the_printed_command_unlocks_it(home, tmp_path):
    """The variable's value is encoded as bittensor reads it: the plain password is not it, and the
    command the message names prints the line that is."""
    wallet = bt.Wallet("locked", "default", path=str(tmp_path))
    wallet.create_new_hotkey(use_password=True, hotkey_password="s3cret-pw", suppress=True)
    variable = wallet.hotkey_file.env_var_name()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BT_PW_")}
    serve = [f"home={home}", "wallet=bittensor", "wallet.name=locked", f"wallet.path={tmp_path}", "mode=validate"]

    unset = run_cli(*serve, cwd=tmp_path, env=env)
    command = re.search(r"expected the line `python (-m declarative_miner\.password [^`]+)` prints", unset.stderr)
    assert unset.returncode == 2 and variable in unset.stderr and command, unset.stderr
    plain = run_cli(*serve, cwd=tmp_path, env={**env, variable: "s3cret-pw"})
    assert plain.returncode == 2 and "as `python -m declarative_miner.password" in plain.stderr, plain.stderr
    wrong = subprocess.run([sys.executable, *shlex.split(command.group(1))], input="guess\n", env=env,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "does not open" in wrong.stderr
    printed = subprocess.run([sys.executable, *shlex.split(command.group(1))], input="s3cret-pw\n", env=env,
                             capture_output=True, text=True, timeout=60)
    name, _, value = printed.stdout.strip().partition("=")
    assert printed.returncode == 0 and name == variable, printed.stderr
    unlocked = run_cli(*serve, cwd=tmp_path, env={**env, variable: value})
    assert unlocked.returncode == 0, unlocked.stderr
    assert wallet.hotkeypub.ss58_address in unlocked.stdout


def test_a_missing_wallet_names_the_path_and_the_btcli_command(home, tmp_path):
    with pytest.raises(ConfigError) as caught:
        Miner(compose([f"home={home}", "network=local", "network.netuid=3", f"wallet.path={tmp_path}",
                       "wallet.name=nobody"]))
    [problem] = caught.value.problems
    assert problem.key == "wallet.hotkey" and f"no hotkey file at {tmp_path}/nobody/hotkeys/default" in problem.message
    command = re.search(r"`(btcli [^`]+)`", problem.message).group(1)
    assert command == f"btcli wallet new-hotkey --wallet nobody --wallet-hotkey default --wallet-path {tmp_path}"
    assert_btcli_takes(command)


def assert_btcli_takes(command: str) -> None:
    """The command as printed runs: bittensor 11's own btcli accepts every flag (its --help form)."""
    btcli = Path(sys.executable).parent / "btcli"
    result = subprocess.run([str(btcli), *shlex.split(command)[1:], "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_miner_slower_to_build_than_its_snapshot_bound_refreshes_before_serving(make_miner, client_for):
    """The metagraph is read first, then the prompt loads for 3.5 s, past the 3 s bound: serving
    starts with a refresh, so the first request is answered, not refused as stale."""
    with make_miner("network.sync_interval=1", "prompt._target_=tests.prompts.SlowToLoad",
                    "+prompt.seconds=3.5", "cache.ttl=0") as miner:
        first = client_for(miner).prompt(["first"])
        age = miner.metagraph.age
    assert (first.status, first.completion) == (200, "first")
    assert age < 3


def _ready(miner) -> tuple[int, list[str]]:
    answer = httpx.get(f"http://127.0.0.1:{miner.port}/ready")
    return answer.status_code, answer.json()["reasons"]


def test_the_earnings_gauges_show_the_miners_standing_from_each_read(live_miner, chain, client_for, hotkeys):
    chain.neurons[0].trust, chain.neurons[0].last_update = 32768, 990
    with live_miner("network.sync_interval=0.1") as miner:
        assert (gauge(miner, "miner_registered"), gauge(miner, "miner_uid")) == (1, 0)
        assert gauge(miner, "miner_incentive") == pytest.approx(6553 / 65535)
        assert gauge(miner, "miner_trust") == pytest.approx(32768 / 65535)
        assert (gauge(miner, "miner_emission"), gauge(miner, "miner_last_update_block")) == (1.0, 990)
        assert client_for(miner).prompt(["earning?"]).status == 200
        assert client_for(miner, "stranger").prompt(["x"]).status == 403
        validator = hotkeys["dev-validator"].ss58_address
        assert gauge(miner, "miner_validator_requests_total", validator=validator, status="200") == 1
        scraped = httpx.get(f"http://127.0.0.1:{miner.metrics_port}/metrics").text
        assert hotkeys["stranger"].ss58_address not in scraped  # permit holders only: the label set is bounded
        dashboard = (Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "miner.json").read_text()
        for name in set(re.findall(r"\bminer_\w+", dashboard)) - {"miner_json"}:
            assert re.search(rf"^{name}[{{ ]", scraped, re.M), f"the dashboard reads {name}, which the miner does not show"
        chain.neurons[0].incentive = 65535
        wait_until(lambda: gauge(miner, "miner_incentive") == 1.0)
        chain.neurons.pop(0)  # deregistered
        wait_until(lambda: gauge(miner, "miner_uid") == -1)
        assert gauge(miner, "miner_registered") == 0


@pytest.mark.parametrize("skew, said", [(-60, "ahead of the chain's newest block"),
                                        (30, "behind the chain's newest block")])
def test_a_skewed_clock_is_warned_and_shown_in_readiness(live_miner, chain, caplog, skew, said):
    chain.clock_skew = skew
    with caplog.at_level(logging.WARNING), live_miner() as miner:
        status, reasons = _ready(miner)
        assert status == 503 and any(said in reason for reason in reasons), reasons
        assert gauge(miner, "miner_ready") == 0
        assert gauge(miner, "miner_clock_lag_seconds") == pytest.approx(-skew, abs=2)
        assert httpx.get(f"http://127.0.0.1:{miner.port}/health").status_code == 200  # alive all the same
    assert "Not ready: this machine's clock is" in caplog.text


def test_a_right_clock_and_a_fresh_metagraph_are_ready(live_miner):
    with live_miner() as miner:
        assert _ready(miner) == (200, [])
        assert gauge(miner, "miner_ready") == 1


def test_a_published_endpoint_that_no_longer_matches_is_warned_and_published_again(live_miner, chain, caplog):
    chain.neurons[0].axon = ("198.51.100.1", 8091)
    with caplog.at_level(logging.WARNING), live_miner("axon.external_port=9000", "network.sync_interval=0.1") as miner:
        assert len(chain.submitted) == 1  # at start, as before
        assert _ready(miner) == (200, [])  # what it published at start stands
        caplog.clear()
        chain.neurons[0].axon = ("198.51.100.1", 8091)  # someone else's doing, or the chain's
        wait_until(lambda: len(chain.submitted) == 2)
        assert _ready(miner) == (200, [])  # published: nothing for validators to miss
    assert ("the chain publishes 198.51.100.1:8091 for this hotkey, not 203.0.113.7:9000: validators "
            "query the chain's; publishing it again") in caplog.text
    assert chain.neurons[0].axon == ("203.0.113.7", 9000)


def _going_live_lines() -> list[list[str]]:
    """The commands of README's "Going live" section, split as a shell would."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Going live", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line.strip()) for line in section.splitlines() if line.startswith("    .venv/bin/")]


def test_the_readmes_going_live_walkthrough_runs_up_to_what_needs_a_real_chain(home, tmp_path, hotkeys):
    """Each btcli line takes its flags (bittensor 11's own btcli); the miner's lines validate and serve
    as written against the fake chain, with a wallet made as the first btcli line makes it."""
    lines = _going_live_lines()
    btcli_lines = [words for words in lines if words[0].endswith("/btcli")]
    miner_lines = [words[3:] for words in lines if words[:3] == [".venv/bin/python", "-m", "declarative_miner"]]
    assert len(btcli_lines) == 4 and len(miner_lines) == 2, lines
    for words in btcli_lines:
        assert_btcli_takes(shlex.join(["btcli", *words[1:]]))
    from declarative_miner.wallet import create_wallet

    wallets = tmp_path / "wallets"
    create_wallet("mycoldkey", "myhotkey", str(wallets))  # what `btcli wallet create` leaves on disk
    me = bt.Wallet("mycoldkey", "myhotkey", path=str(wallets)).hotkey.ss58_address
    chain = FakeSubstrate(netuid=1, neurons=[ChainNeuron(me, stake=1.0),
                                             ChainNeuron(hotkeys["dev-validator"].ss58_address, stake=50_000,
                                                         validator_permit=True)])
    here = [f"home={home}", f"wallet.path={wallets}", "axon.port=0", "metrics.port=0", "axon.ip=127.0.0.1"]
    public = "1.2.3.4"  # what `MY_IP=$(curl ...)` finds: a public address
    validate, serve = ([word.replace("$MY_IP", public) for word in words] for words in miner_lines)
    assert validate == [*serve, "mode=validate"]
    subtensor = bt.Subtensor("test", substrate=chain)
    try:
        assert "wallet     mycoldkey/myhotkey" in Miner(compose([*validate, *here]), subtensor=subtensor).summary()
        with Miner(compose([*serve, *here]), subtensor=subtensor) as miner:
            ready = httpx.get(f"http://127.0.0.1:{miner.port}/ready").json()["reasons"]
        # Only the model server (none here) keeps it from being ready: clock, endpoint and metagraph are right.
        assert [reason.split(" (")[0] for reason in ready] == ["the model server at http://127.0.0.1:8000/v1 does not answer"]
        [(call, signer, _)] = chain.submitted
        assert (call.params["ip"], signer) == (int(ipaddress.ip_address(public)), me)
    finally:
        subtensor.close()
        if subtensor._loop_thread is not None:
            subtensor._loop_thread._loop.close()


def test_a_chain_that_does_not_answer_at_start_exits_75_for_the_service_manager_to_retry(home, wallets_dir):
    """A chain down at boot is no config problem: exit 75 (EX_TEMPFAIL), which the shipped service
    files restart, not 2, which they do not (a bad config stays stopped)."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"ws://127.0.0.1:{closed.getsockname()[1]}"
    result = run_cli(f"home={home}", f"network.name={nowhere}", "network.netuid=3", f"wallet.path={wallets_dir}",
                     "wallet.name=dev-miner", "network.publish_axon=false", cwd=home, timeout=120)
    assert result.returncode == 75, result.stderr[-2000:]
    assert "cannot start now (the config may be right)" in result.stderr
    assert f"network.name: cannot read netuid 3 from {nowhere}" in result.stderr
