"""An in-memory chain behind bittensor 11's `Substrate` seam, so the real `Subtensor` code runs
(metagraph decoding, `ServeAxon` composition and signing) with no network. The only fake in
the suite: nothing real can be a chain here."""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field

from bittensor.balance import Balance
from bittensor.result import ExtrinsicResult

RAO = 10**9


def encoded(call) -> bytes:
    """A call as bytes to sign: module, function and parameters, in a canonical order."""
    return json.dumps([call.module, call.function, call.params], sort_keys=True, default=str).encode()


@dataclass
class ChainNeuron:
    hotkey: str
    stake: float = 0.0  # alpha
    validator_permit: bool = False
    axon: tuple[str, int] | None = None
    incentive: int = 0  # PerU16
    trust: int = 0  # PerU16
    last_update: int = 0  # block


@dataclass
class FakeSubstrate:
    """One subnet; `neurons` may be edited between reads; `reachable=False` makes reads fail."""

    netuid: int
    neurons: list[ChainNeuron]
    block: int = 1000
    reachable: bool = True
    submitted: list = field(default_factory=list)  # (call, signer ss58, signature of encoded(call)) per extrinsic
    token_symbols: dict = field(default_factory=dict)
    clock_skew: float = 0.0  # seconds the chain's newest block timestamp is ahead of this machine's clock
    seconds_a_block: float = 12.0

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance.from_rao(rao, netuid)

    def _check(self) -> None:
        if not self.reachable:
            raise ConnectionError("the fake chain is unreachable")

    async def connect(self) -> None:
        self._check()

    async def close(self) -> None:
        pass

    async def block_number(self) -> int:
        self._check()
        return self.block

    async def block_hash(self, block=None) -> str:
        self._check()
        return "0x" + f"{block or self.block:064x}"

    async def query(self, module, storage_function, params=None, block_hash=None):
        self._check()
        assert (module, storage_function) == ("Timestamp", "Now"), (module, storage_function)
        return int((time.time() + self.clock_skew) * 1000)

    async def block_time(self) -> float:
        return self.seconds_a_block

    async def query_map(self, module, storage_function, params=None, block_hash=None):
        self._check()
        return []

    async def runtime_call(self, api, method, params, block_hash=None):
        self._check()
        assert (api, method, params) == ("SubnetInfoRuntimeApi", "get_metagraph", [self.netuid])
        self.block += 1
        return {
            "block": self.block, "tempo": 360, "last_step": 0, "blocks_since_last_step": 1,
            "owner_hotkey": self.neurons[0].hotkey, "owner_coldkey": self.neurons[0].hotkey,
            "network_registered_at": 1,
            "hotkeys": [n.hotkey for n in self.neurons], "coldkeys": [n.hotkey for n in self.neurons],
            "validator_permit": [n.validator_permit for n in self.neurons],
            "alpha_stake": [int(n.stake * RAO) for n in self.neurons], "tao_stake": [0 for _ in self.neurons],
            "total_stake": [int(n.stake * RAO) for n in self.neurons],
            "incentives": [n.incentive for n in self.neurons], "emission": [RAO for _ in self.neurons],
            "trust": [n.trust for n in self.neurons], "last_update": [n.last_update for n in self.neurons],
            "axons": [{"ip": int(ipaddress.ip_address(n.axon[0])), "port": n.axon[1], "ip_type": 4} if n.axon else {}
                      for n in self.neurons],
        }

    async def compose(self, call):
        return call

    async def estimate_fee(self, call, keypair) -> Balance:
        return Balance.from_rao(0)

    async def submit(self, call, keypair, **kwargs) -> ExtrinsicResult:
        self._check()
        # What a real node would check: the extrinsic (here its call, canonically encoded) signed by `keypair`.
        self.submitted.append((call, keypair.ss58_address, bytes(keypair.sign(encoded(call)))))
        params = call.params
        for n in self.neurons:
            if n.hotkey == keypair.ss58_address:
                n.axon = (str(ipaddress.ip_address(params["ip"])), params["port"])
        return ExtrinsicResult(success=True, block_hash="0x" + "22" * 32)
