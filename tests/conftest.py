"""Shared fixtures: real wallets in a temporary home, real miners on free loopback ports."""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

# Every test gets its own miner home; nothing touches ~/.declarative_miner or ~/.bittensor.
os.environ["DECLARATIVE_MINER_HOME"] = tempfile.mkdtemp(prefix="dm-tests-home-")
# bittensor caches chain data under HOME: keep it out of the real one (caches stay put).
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
os.environ["HOME"] = tempfile.mkdtemp(prefix="dm-tests-user-")
# Models come from the tests' own tiny builds: never from a hub, never from a real cache.
os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="dm-tests-hf-"),
                  TOKENIZERS_PARALLELISM="false")


def _loopback_only(connect):
    """Tests may open sockets to this machine only."""
    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = ipaddress.ip_address(address[0].split("%")[0]) if address[0] != "localhost" else None
            if host is not None and not host.is_loopback:
                raise OSError(f"tests may not connect to {address[0]}: loopback only")
        return connect(self, address, *args)
    return guarded


socket.socket.connect = _loopback_only(socket.socket.connect)
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)

from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.client import MinerClient  # noqa: E402
from declarative_miner.config import compose  # noqa: E402
from declarative_miner.miner import Miner  # noqa: E402
from declarative_miner.wallet import create_wallet  # noqa: E402


@pytest.fixture(scope="session")
def wallets_dir(tmp_path_factory) -> Path:
    """One dev wallet directory for the session: the miner, the dev validator, and a stranger."""
    path = tmp_path_factory.mktemp("wallets")
    for name in ("dev-miner", dev.DEV_VALIDATOR, "stranger", "small-validator"):
        create_wallet(name, "default", str(path))
    return path


@pytest.fixture(scope="session")
def hotkeys(wallets_dir) -> dict:
    from declarative_miner.wallet import open_wallet

    return {name: open_wallet(name, "default", str(wallets_dir)).hotkey
            for name in ("dev-miner", dev.DEV_VALIDATOR, "stranger", "small-validator")}


@pytest.fixture
def home(tmp_path, wallets_dir, hotkeys) -> Path:
    """A miner home whose dev network holds the session's wallets (the stranger is unregistered)."""
    metagraph = tmp_path / "dev" / "metagraph.yaml"
    metagraph.parent.mkdir(parents=True)
    metagraph.write_text(json.dumps({"netuid": 1, "neurons": [
        {"hotkey": hotkeys["dev-miner"].ss58_address, "stake": 0},
        {"hotkey": hotkeys[dev.DEV_VALIDATOR].ss58_address, "stake": 10000, "validator_permit": True},
        {"hotkey": hotkeys["small-validator"].ss58_address, "stake": 10, "validator_permit": True},
    ]}))
    (tmp_path / "dev" / "wallets").symlink_to(wallets_dir)
    return tmp_path


@pytest.fixture
def make_miner(home) -> Iterator[Callable[..., Miner]]:
    """Build a Miner from overrides on top of the test home, on a free port."""
    built = []

    def make(*overrides: str, cls=Miner) -> Miner:
        miner = cls(compose([f"home={home}", "axon.port=0", "metrics.port=0", *overrides]))
        built.append(miner)
        return miner

    yield make
    for miner in built:
        miner.close()


@pytest.fixture
def client_for(hotkeys) -> Iterator[Callable[..., MinerClient]]:
    """A client signing as one of the session's wallets, pointed at a running miner."""
    clients = []

    def make(miner: Miner, wallet: str = dev.DEV_VALIDATOR) -> MinerClient:
        client = MinerClient(hotkeys[wallet], "127.0.0.1", miner.port, receiver=miner.hotkey)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A directory holding a tiny random-weight Llama chat model (see tests/tiny_model.py)."""
    import_required("transformers", "the model recipes need: pip install -e '.[test]'")
    from tests import tiny_model

    return tiny_model.build(tmp_path_factory.mktemp("tiny-llama"))


BITTENSOR_V10 = "bittensor==10.5.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "declarative-miner-tests" / "bt-10.5.0"
V10_PYTHON = CACHE / "bin" / "python"


@functools.cache
def _install_v10() -> Optional[tuple[bool, str]]:
    """Create the cached venv holding bittensor 10.5.0 (once a session); None once it is there,
    else (whether PyPI was unreachable, pip's complaint)."""
    ready = CACHE / ".ready"
    if ready.exists():
        return None
    shutil.rmtree(CACHE, ignore_errors=True)
    venv.create(CACHE, with_pip=True)
    result = subprocess.run([str(V10_PYTHON), "-m", "pip", "install", "--quiet", BITTENSOR_V10],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        shutil.rmtree(CACHE, ignore_errors=True)
        unreachable = any(s in result.stderr for s in ("Could not find a version", "NewConnectionError",
                                                       "Temporary failure in name resolution"))
        return unreachable, result.stderr
    ready.touch()
    return None


PM2 = "pm2@5.4.3"
PM2_DIR = CACHE.parent / PM2.replace("@", "-")
PM2_BIN = PM2_DIR / "node_modules" / ".bin" / "pm2"


@functools.cache
def _install_pm2() -> Optional[str]:
    """Install pm2 from npm into a cached directory (once a session); None once it is there, else why not."""
    if PM2_BIN.exists():
        return None
    if shutil.which("npm") is None:
        return "npm is not installed (Debian: apt-get install npm)"
    result = subprocess.run(["npm", "install", "--prefix", str(PM2_DIR), PM2, "--no-audit", "--no-fund",
                             "--loglevel=error"], capture_output=True, text=True, timeout=600)
    return None if result.returncode == 0 and PM2_BIN.exists() else f"npm install {PM2} failed: {result.stderr[-1000:]}"


# What makes a test slow: a real server on a socket, a subprocess, a real model or service.
SLOW_FIXTURES = {"make_miner", "served_process", "served", "v10_python", "tiny_model", "redis_url", "installed",
                 "two_workers", "live_miner", "fresh_home", "model_server", "openai_miner", "tiny_disk", "minilm",
                 "pm2"}


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Mark slow every test that needs what SLOW_FIXTURES name or that runs the command line, so
    `pytest -m "not slow"` is the fast tier (the pipeline in process, units)."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        source = getattr(getattr(item, "function", None), "__code__", None)
        runs_cli = source is not None and {"run_cli", "Running", "subprocess"} & set(source.co_names)
        if uses & SLOW_FIXTURES or runs_cli:
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install bittensor 10.5.0 and pm2 before the tests run when one needs them: on a fresh machine
    that takes a minute or more, which inside the first such test would count against its timeout."""
    if session.config.option.collectonly:
        return
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "v10_python" in used:
        _install_v10()
    if "pm2" in used:
        _install_pm2()


@pytest.fixture(scope="session")
def v10_python() -> Path:
    """The interpreter of a venv holding bittensor 10.5.0, created once and cached."""
    if (problem := _install_v10()) is not None:
        unreachable, stderr = problem
        require(not unreachable, f"PyPI is unreachable, so {BITTENSOR_V10} cannot be installed: {stderr[-300:]}")
        pytest.fail(f"installing {BITTENSOR_V10} failed:\n{stderr[-2000:]}")
    return V10_PYTHON


@pytest.fixture(scope="session")
def pm2() -> Path:
    """pm2's command, installed once from npm into a cache."""
    problem = _install_pm2()
    require(problem is None, problem or "")
    return PM2_BIN


def require(available: bool, reason: str) -> None:
    """Skip a test whose component this machine cannot have; in CI (CI=true) fail instead, since a
    CI machine must have every required component."""
    if not available:
        if os.environ.get("CI") == "true":
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def import_required(module: str, reason: str):
    """`module`, imported; skipped where it cannot be installed, a failure in CI (see `require`)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require(False, f"{module} is not installed: {reason}")


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def gauge(miner, name: str, **labels: str) -> float:
    """A metric's value (the sample with these labels) of a serving miner, read from its metrics
    listener: `miner` is a `Miner`, or the listener's port (a miner in another process)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = miner if isinstance(miner, int) else miner.metrics_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())), 0.0)


def on_free_ports(args) -> tuple[str, ...]:
    """`args` with `axon.port=0 metrics.port=0` where they name no port: the machine is shared, and
    a miner (or `mode=validate`, which checks the ports) must not meet another's default port."""
    args = list(args)
    if "mode=eval" in args:
        return tuple(args)  # an evaluation serves on ports of its own choosing
    named = {arg.split("=")[0].lstrip("+~") for arg in args}
    ports = [f"{key}=0" for key in ("axon.port", "metrics.port") if key not in named]
    # Among the other overrides: Hydra's command line takes them as one run of positional arguments.
    at = next((i for i, arg in enumerate(args) if "=" in arg and not arg.startswith("-")), len(args))
    return (*args[:at], *ports, *args[at:])


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    """Run `python -m declarative_miner ARGS` (on free ports) in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "declarative_miner", *on_free_ports(args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
