"""The embedded dev miner as a new user meets it: `python -m declarative_miner`, then the client."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from .conftest import on_free_ports, run_cli, wait_until


class Running:
    """A miner process whose log lines are read on a thread, so waits never block forever."""

    def __init__(self, *args: str, env: dict, cwd, preexec_fn=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "declarative_miner", *on_free_ports(args)], env=env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(self.seen)}")

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self._pump_thread.join(timeout=10)
        self.proc.stdout.close()
        while not self.lines.empty():  # the rest of the output, for `seen`
            self.seen.append(self.lines.get())
        return code


@pytest.fixture
def fresh_home(tmp_path):
    env = {**os.environ, "DECLARATIVE_MINER_HOME": str(tmp_path / "home")}
    return env, tmp_path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_run_creates_the_dev_network_serves_and_the_client_gets_the_echo(fresh_home, sig):
    env, cwd = fresh_home
    miner = Running("axon.port=0", env=env, cwd=cwd)
    try:
        port = miner.wait_for(r"Serving .* on http://127\.0\.0\.1:(\d+)").group(1)
        hint = miner.wait_for(r'Query it as the dev validator: (.*)$').group(1)
        client = shlex.split(hint)  # the command the miner prints runs as printed
        assert client == [sys.executable, "-m", "declarative_miner.client", "What is 2+2?", "--port", port]
        first = subprocess.run(client, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        again = subprocess.run(client, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    finally:
        code = miner.stop(sig)
    assert (first.returncode, first.stdout) == (0, "What is 2+2?\n"), first.stderr
    assert again.returncode == 1 and again.stderr.startswith("409 duplicate prompt:")
    assert code == 0
    home = cwd / "home" / "dev"
    neurons = yaml.safe_load((home / "metagraph.yaml").read_text())["neurons"]
    assert [n["validator_permit"] for n in neurons] == [False, True]
    assert sorted(p.name for p in (home / "wallets").iterdir()) == ["dev-miner", "dev-validator"]
    assert oct((home / "wallets" / "dev-miner" / "hotkeys" / "default").stat().st_mode & 0o777) == "0o600"


def test_the_printed_query_finds_the_dev_validator_of_a_home_given_on_the_command_line(fresh_home):
    """`home=` on the command line, not in the environment: the client's default wallets are elsewhere."""
    env, cwd = fresh_home
    miner = Running(f"home={cwd / 'other-home'}", "axon.port=0", env=env, cwd=cwd)
    try:
        client = shlex.split(miner.wait_for(r'Query it as the dev validator: (.*)$').group(1))
        answer = subprocess.run(client, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    finally:
        miner.stop()
    assert client[-2:] == ["--wallet-path", str(cwd / "other-home" / "dev" / "wallets")]
    assert (answer.returncode, answer.stdout) == (0, "What is 2+2?\n"), answer.stderr


def test_a_second_run_reuses_the_dev_wallets_and_never_rewrites_them(fresh_home):
    env, cwd = fresh_home
    validate = [sys.executable, "-m", "declarative_miner", *on_free_ports(["mode=validate"])]
    before = subprocess.run(validate, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert before.returncode == 0 and "mode=validate creates nothing" in before.stdout, before.stderr
    assert not (cwd / "home" / "dev" / "wallets").exists()
    first_run = Running("axon.port=0", env=env, cwd=cwd)
    first_run.wait_for("Serving")
    assert first_run.stop() == 0
    for _ in range(2):
        result = subprocess.run(validate, env=env, cwd=cwd,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        hotkey_line = next(line for line in result.stdout.splitlines() if line.startswith("wallet"))
        if _ == 0:
            first = hotkey_line
    assert hotkey_line == first


def test_the_client_explains_a_missing_wallet(tmp_path):
    result = subprocess.run([sys.executable, "-m", "declarative_miner.client", "hi", "--wallet.path", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "wallet.hotkey: no hotkey file at" in result.stderr and "btcli wallet new-hotkey" in result.stderr


def test_sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0(fresh_home, hotkeys, wallets_dir):
    import httpx

    from declarative_miner.client import MinerClient

    from .conftest import gauge

    env, cwd = fresh_home
    env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    (cwd / "mg.yaml").write_text(yaml.safe_dump({"neurons": [
        {"hotkey": hotkeys["dev-validator"].ss58_address, "stake": 10000, "validator_permit": True}]}))
    miner = Running("axon.port=0", "prompt._target_=tests.prompts.slow", "+prompt.seconds=1.5",
                    f"wallet.path={wallets_dir}", f"network.metagraph_file={cwd}/mg.yaml", env=env, cwd=cwd)
    metrics = int(miner.wait_for(r"Prometheus at http://127\.0\.0\.1:(\d+)").group(1))
    port = int(miner.wait_for(r"on http://127\.0\.0\.1:(\d+)").group(1))
    client = MinerClient(hotkeys["dev-validator"], port=port)
    replies = []
    worker = threading.Thread(target=lambda: replies.append(client.prompt(["finish me"])))
    worker.start()
    deadline = time.monotonic() + 15
    while gauge(metrics, "miner_inflight") == 0:
        assert time.monotonic() < deadline
    miner.proc.send_signal(signal.SIGTERM)
    miner.wait_for("Shutting down")
    with pytest.raises(httpx.ConnectError):  # the listener is closed first: new callers go elsewhere
        httpx.get(f"http://127.0.0.1:{port}/health")
    code = miner.stop(signal.SIGTERM)
    worker.join(30)
    client.close()
    assert code == 0
    assert (replies[0].status, replies[0].completion) == (200, "slow finish me")


def _tour_lines() -> list[tuple[tuple[str, ...], list[str], str]]:
    """The client commands of README and the docs it sends operators to, in order: the overrides of
    the miner each one queries (the miner command just before it in its code block; none: the
    default miner), the client's arguments, and what the line's comment announces."""
    root = Path(__file__).parents[1]
    pages = [root / "README.md", root / "docs" / "configuration.md", root / "docs" / "serving.md"]
    lines, server = [], ()
    for line in "\n\n".join(page.read_text() for page in pages).splitlines():
        if line.strip() and not line.startswith("    "):
            server = ()  # a code block ends
        command, _, comment = line.strip().partition("#")
        words = shlex.split(command.rstrip(" \\")) if command.startswith(".venv/bin/python -m declarative_miner") else []
        if words[2:3] == ["declarative_miner.client"]:
            lines.append((server, words[1:], comment.strip()))
        elif words[2:3] == ["declarative_miner"]:
            server = tuple(words[3:])
    return lines


def test_the_readme_tour_runs_top_to_bottom_on_a_fresh_home_with_no_409_it_does_not_announce(fresh_home):
    env, cwd = fresh_home
    tour = _tour_lines()
    assert len(tour) >= 5  # the first question, its repeat, a stream, a v10 query, a declared type
    miners, results = {}, []
    try:
        for server, args, _ in tour:
            if server not in miners:
                miners[server] = Running(*server, "axon.port=0", env=env, cwd=cwd)
                miners[server].port = miners[server].wait_for(r"Serving .* on http://127\.0\.0\.1:(\d+)").group(1)
            results.append(subprocess.run([sys.executable, *args, "--port", miners[server].port], env=env, cwd=cwd,
                                          capture_output=True, text=True, timeout=60))
    finally:
        for miner in miners.values():
            miner.stop()
    for (server, args, comment), result in zip(tour, results):
        if "409" in comment:
            assert result.returncode == 1 and result.stderr.startswith("409 duplicate prompt:"), (args, result.stderr)
        else:
            assert result.returncode == 0, (server, args, result.stderr)
            assert "None" not in result.stdout + result.stderr
        if comment.startswith("prints: "):
            assert result.stdout == comment.removeprefix("prints: ") + "\n"


def test_run_folders_are_pruned_to_keep_runs_and_the_log_is_written_once(fresh_home):
    env, cwd = fresh_home
    runs = Path(env["DECLARATIVE_MINER_HOME"]) / "runs"
    for minute in range(5):  # five earlier starts
        (runs / "2026-01-01" / f"00-0{minute}-00" / ".hydra").mkdir(parents=True)
    result = run_cli("mode=validate", "keep_runs=2", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    kept = sorted(str(folder.relative_to(runs)) for folder in runs.glob("*/*"))
    assert len(kept) == 2 and kept[0] == "2026-01-01/00-04-00", kept  # the newest earlier one, and this one
    assert not list(runs.rglob("*.log"))  # the log goes to stdout alone: a service manager keeps it


def test_a_run_directory_of_the_operators_own_is_never_pruned(fresh_home):
    env, cwd = fresh_home
    mine = cwd / "mine"
    for name in ("a/b", "c/d", "e/f"):
        (mine / name).mkdir(parents=True)
    result = run_cli("mode=validate", "keep_runs=1", f"hydra.run.dir={mine}/x/run", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert {"a", "c", "e", "x"} <= {folder.name for folder in mine.iterdir()}


def test_the_service_log_has_no_per_call_library_lines_unless_asked(fresh_home):
    """The openai recipe's HTTP client logs each call at INFO (httpx: "HTTP Request: GET ..."): at the
    default level only the miner's own lines reach the log; log_level=DEBUG shows them."""
    env, cwd = fresh_home
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, str(root / "benchmarks" / "paced_openai.py"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/v1/models"],
                                          capture_output=True).returncode == 0)
        seen = {}
        for level in ("INFO", "DEBUG"):
            miner = Running("+recipe=openai", f"prompt.base_url=http://127.0.0.1:{port}/v1", "prompt.model=paced",
                            f"log_level={level}", env=env, cwd=cwd)
            try:
                miner.wait_for(r"Serving .* on http://")
            finally:
                miner.stop()
            seen[level] = "".join(miner.seen)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "The model server at" in seen["INFO"] and "serves paced" in seen["INFO"]  # it answered
    assert "HTTP Request: GET" not in seen["INFO"], seen["INFO"][-2000:]
    assert "HTTP Request: GET" in seen["DEBUG"], seen["DEBUG"][-2000:]
