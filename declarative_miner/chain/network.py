"""Opening the network the config names: the miner's wallet, then its metagraph source.

Part of the composition root: these take the settings tree and return built parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


from ..errors import ConfigError, ConfigProblem
from ..schema import MinerConfig, Mode
from ..wallet import open_wallet
from . import dev
from .live import LiveChain
from .sync import MetagraphSync


def open_miner_wallet(s: MinerConfig) -> tuple[Any, list[Path]]:
    """The miner's wallet, and the dev files found missing when `mode=validate` (which creates
    nothing: it validates with an in-memory stand-in hotkey instead)."""
    if s.network.name == "dev" and s.mode == Mode.validate:
        missing = dev.missing(s.wallet.name, s.wallet.hotkey, s.wallet.path, s.network.metagraph_file)
        if not dev.creates_wallet(s.home, s.wallet.path):  # serving needs this wallet to exist: so does this
            metagraph = Path(s.network.metagraph_file).expanduser()
            return open_wallet(s.wallet.name, s.wallet.hotkey, s.wallet.path), [p for p in missing if p == metagraph]
        if missing:
            return dev.StandInWallet(), missing
    elif s.network.name == "dev":
        dev.prepare(s.home, s.wallet.name, s.wallet.hotkey, s.wallet.path, s.network.metagraph_file, s.network.subnet)
    return open_wallet(s.wallet.name, s.wallet.hotkey, s.wallet.path), []


def connect(s: MinerConfig, hotkey: str, subtensor: Any, stand_in: bool) -> tuple[MetagraphSync, Optional[LiveChain]]:
    """The metagraph source the network names, read once now (a live chain must list `hotkey`).
    `subtensor` is used when given (and then never closed here); else one is opened."""
    network = s.network
    if network.name == "dev":
        load = (lambda: dev.empty_metagraph(network.subnet)) if stand_in else \
            (lambda: dev.load_metagraph(network.metagraph_file, network.subnet))
        return MetagraphSync(load, network.sync_interval), None
    chain = LiveChain(network.name, network.subnet, hotkey, subtensor)
    try:
        sync = MetagraphSync(chain.load, network.sync_interval)
    except Exception as exc:
        chain.close()
        # A subnet that does not exist is the config's doing; a chain that does not answer may answer later.
        raise ConfigError([ConfigProblem("network.name", f"cannot read netuid {network.subnet} from "
                                         f"{network.name} (got {type(exc).__name__}: {exc}; expected a "
                                         "reachable network where the subnet exists)",
                                         transient=not isinstance(exc, LookupError))]) from None
    chain.require_registration(s.wallet.name, s.wallet.hotkey, s.wallet.path)
    return sync, chain
