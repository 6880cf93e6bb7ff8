"""The embedded dev network: wallets and a metagraph in files, so a miner runs with no chain."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from bittensor.sp_core import Keypair

from ..errors import ConfigError, ConfigProblem
from ..files import private_dir, write_private
from ..wallet import create_wallet
from .metagraph import Metagraph, Neuron

log = logging.getLogger(__name__)

DEV_VALIDATOR = "dev-validator"
DEV_VALIDATOR_STAKE = 10_000.0

_HEADER = """\
# The dev network's metagraph: one neuron per entry, uid = position in the list.
# Add hotkeys to try the blacklist and priority policies; the miner rereads this file every network.sync_interval seconds.
# Keys: hotkey (ss58), stake (total; alpha_stake/tao_stake default to it), validator_permit.
"""


def dev_wallets_dir(home: str) -> Path:
    return Path(home).expanduser() / "dev" / "wallets"


def prepare(home: str, wallet_name: str, wallet_hotkey: str, wallet_path: str,
            metagraph_file: str, netuid: int) -> None:
    """Create what a first dev run needs and is missing: the dev wallets and the metagraph file.

    Only wallets inside `<home>/dev/wallets` are ever created, and nothing existing is rewritten.
    """
    private_dir(Path(home).expanduser())
    dev_dir = dev_wallets_dir(home)
    miner = create_wallet(wallet_name, wallet_hotkey, str(dev_dir)) if creates_wallet(home, wallet_path) else None
    validator = create_wallet(DEV_VALIDATOR, "default", str(dev_dir))
    path = Path(metagraph_file).expanduser()
    if path.exists():
        return
    neurons = []
    if miner is not None:
        neurons.append({"hotkey": miner.hotkey.ss58_address, "stake": 0.0, "validator_permit": False})
    neurons.append({"hotkey": validator.hotkey.ss58_address, "stake": DEV_VALIDATOR_STAKE,
                    "validator_permit": True})
    private_dir(path.parent)
    write_private(path, _HEADER + yaml.safe_dump({"netuid": netuid, "neurons": neurons}, sort_keys=False))
    log.info("Wrote the dev metagraph %s (dev validator %s)", path, validator.hotkey.ss58_address)


def creates_wallet(home: str, wallet_path: str) -> bool:
    """Whether a first dev run creates the miner's wallet at `wallet_path` (only inside home's dev wallets)."""
    return Path(wallet_path).expanduser().resolve() == dev_wallets_dir(home).resolve()


def missing(wallet_name: str, wallet_hotkey: str, wallet_path: str, metagraph_file: str) -> list[Path]:
    """The dev files a first run would create that do not exist yet."""
    hotkey = Path(wallet_path).expanduser() / wallet_name / "hotkeys" / wallet_hotkey
    return [path for path in (hotkey, Path(metagraph_file).expanduser()) if not path.exists()]


class StandInWallet:
    """An in-memory hotkey for `mode=validate` before the first run: validate creates nothing."""

    def __init__(self) -> None:
        self.hotkey = Keypair.create_from_uri("//declarative-miner-validate")


def empty_metagraph(netuid: int) -> Metagraph:
    return Metagraph(netuid=netuid, neurons=(), block=0)


def _neuron(uid: int, entry: object) -> Neuron:
    if not isinstance(entry, dict) or not isinstance(entry.get("hotkey"), str):
        raise ValueError(f"neuron {uid} must be a mapping with a 'hotkey' string")
    stake = float(entry.get("stake", 0.0))
    return Neuron(
        uid=uid,
        hotkey=entry["hotkey"],
        validator_permit=bool(entry.get("validator_permit", False)),
        alpha_stake=float(entry.get("alpha_stake", stake)),
        tao_stake=float(entry.get("tao_stake", stake)),
        total_stake=stake,
    )


def load_metagraph(metagraph_file: str, netuid: int) -> Metagraph:
    """Read the dev metagraph file, or raise a `ConfigError` naming what is wrong in it."""
    path = Path(metagraph_file).expanduser()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        neurons = tuple(_neuron(uid, entry) for uid, entry in enumerate(data.get("neurons") or []))
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError([ConfigProblem(
            "network.metagraph_file",
            f"cannot load {path} (got {exc}; expected YAML with a 'neurons' list of hotkey/stake/validator_permit)",
        )]) from None
    return Metagraph(netuid=netuid, neurons=neurons, block=0)
