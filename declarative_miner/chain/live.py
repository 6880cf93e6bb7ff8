"""A live Bittensor network through bittensor 11's `Subtensor`: metagraph reads and `ServeAxon`."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any, Optional

import bittensor as bt

from ..errors import ConfigError, ConfigProblem
from ..wallet import btcli
from .metagraph import Metagraph, Neuron

log = logging.getLogger(__name__)


def _endpoint(ip: str, port: int) -> str:
    """`ip:port` as the chain's metagraph writes an axon (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def _amount(balance: Any) -> float:
    """A bittensor `Balance` as a float in its own unit (alpha or TAO), 0 when absent."""
    return balance.rao / 1e9 if balance is not None else 0.0


class LiveChain:
    """One subnet of the live network `network`; each read returns a fresh immutable `Metagraph`.

    `subtensor` is a `bt.Subtensor` to use (tests inject one built on an in-memory `substrate`); None
    opens one, and a process forked from this one (a worker) opens its own on its first read: a
    connection's thread does not survive a fork."""

    def __init__(self, network: str, netuid: int, hotkey: str, subtensor: Optional[bt.Subtensor] = None):
        self.network, self.netuid, self.hotkey, self._given = network, netuid, hotkey, subtensor
        self._opened: Optional[tuple[int, bt.Subtensor]] = None
        self.raw: Optional[bt.Metagraph] = None  # the newest bittensor metagraph, for its extra columns
        self._published_at: Optional[int] = None  # block of the read this process last published after

    @property
    def subtensor(self) -> bt.Subtensor:
        if self._given is not None:
            return self._given
        if self._opened is None or self._opened[0] != os.getpid():
            self._opened = (os.getpid(), bt.Subtensor(self.network))
        return self._opened[1]

    def close(self) -> None:
        """Close the connection this process opened (an injected one is its owner's to close)."""
        if self._opened is not None and self._opened[0] == os.getpid():
            self._opened[1].close()
        self._opened = None

    def load(self) -> Metagraph:
        """Read the subnet's metagraph now (blocking), and log this miner's standing in it."""
        raw = self.subtensor.subnets.metagraph(self.netuid, commitments=False)
        if raw is None:
            raise LookupError(f"subnet {self.netuid} does not exist on {self.subtensor.network}")
        self.raw = raw
        graph = Metagraph(netuid=self.netuid, block=raw.block, neurons=tuple(
            Neuron(uid=n.uid, hotkey=n.hotkey, validator_permit=n.validator_permit,
                   alpha_stake=_amount(n.alpha_stake), tao_stake=_amount(n.tao_stake),
                   total_stake=_amount(n.total_stake))
            for n in raw.neurons))
        mine = self.neuron()
        if mine is not None:
            log.info("Metagraph block %d: uid %d, stake %s, incentive %.6f, emission %s",
                     raw.block, mine.uid, mine.total_stake, mine.incentive, mine.emission)
        else:
            log.warning("Metagraph block %d: hotkey %s is not registered on netuid %d",
                        raw.block, self.hotkey, self.netuid)
        return graph

    def neuron(self):
        """This miner's bittensor `MetagraphNeuron` in the newest read, or None."""
        return self.raw.by_hotkey(self.hotkey) if self.raw is not None else None

    def standing(self) -> Optional[dict]:
        """This miner's uid, incentive, emission, trust and last update in the newest read, or None."""
        mine = self.neuron()
        if mine is None:
            return None
        return {"uid": mine.uid, "incentive": mine.incentive, "emission": _amount(mine.emission),
                "trust": mine.trust, "last_update": mine.last_update}

    def clock(self) -> tuple[float, float]:
        """(the newest block's timestamp, seconds a block) as the chain says them (blocking)."""
        return self.subtensor.timestamp().timestamp(), self.subtensor.block_time()

    def endpoint_problem(self, ip: str, port: int) -> Optional[str]:
        """Why validators would not reach `ip:port` from what the chain publishes for this hotkey, or None."""
        mine, wanted = self.neuron(), _endpoint(ip, port)
        if mine is None or mine.axon == wanted:
            return None
        return f"the chain publishes {mine.axon or 'no address'} for this hotkey, not {wanted}: validators query the chain's"

    def keep_published(self, wallet: bt.Wallet, ip: str, port: int) -> None:
        """Publish `ip:port` again, with a warning, when the newest read shows another address for this
        hotkey and nothing was published since that read (the next read shows what was). A readiness
        check: what this process published stands until a read says otherwise; a failed publish raises."""
        problem = self.endpoint_problem(ip, port)
        if problem is None or self.raw is None or self._published_at == self.raw.block:
            return None
        log.warning("%s; publishing it again", problem)
        self.publish(wallet, ip, port)
        return None

    def require_registration(self, wallet_name: str, wallet_hotkey: str, wallet_path: str) -> None:
        """Raise a `ConfigError` with the way to register when this hotkey is not on the subnet."""
        if self.neuron() is None:
            register = btcli("subnets register", name=wallet_name, hotkey=wallet_hotkey, path=wallet_path,
                             netuid=self.netuid, network=self.network)
            raise ConfigError([ConfigProblem("wallet.hotkey", (
                f"hotkey {self.hotkey} is not registered on netuid {self.netuid} of {self.network} "
                f"(expected a registered hotkey: `{register}`)"))])

    def publish(self, wallet: bt.Wallet, ip: str, port: int) -> bool:
        """Put `ip:port` on chain with `ServeAxon`, signed by the hotkey, unless it is there
        already (the chain rate-limits serving). Returns True when an extrinsic was sent."""
        mine = self.neuron()
        wanted = _endpoint(ip, port)
        if mine is not None and mine.axon == wanted:
            log.info("The chain already lists %s for this hotkey: nothing to publish", wanted)
            return False
        result = self.subtensor.execute(bt.ServeAxon(netuid=self.netuid, ip=ip, port=port), wallet)
        if not result.success:
            raise RuntimeError(f"ServeAxon({wanted}) failed: {result.message or result.error}")
        self._published_at = self.raw.block if self.raw is not None else None
        log.info("Published %s on netuid %d (was %s)", wanted, self.netuid, mine.axon if mine else None)
        return True
