"""An immutable snapshot of the subnet that policies read without touching the chain."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from ..identity import identity


@dataclass(frozen=True)
class Neuron:
    """One registered hotkey; stakes are in their own units (alpha, TAO, and the chain's total)."""

    uid: int
    hotkey: str
    validator_permit: bool = False
    alpha_stake: float = 0.0
    tao_stake: float = 0.0
    total_stake: float = 0.0


@dataclass(frozen=True)
class Metagraph:
    """The neurons of one subnet at one block, indexed by hotkey for O(1) look-ups."""

    netuid: int
    neurons: tuple[Neuron, ...]
    block: int = 0
    fetched_at: float = field(default_factory=time.time)
    _by_hotkey: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_hotkey", {_key(n.hotkey): n for n in self.neurons})

    def by_hotkey(self, hotkey: Optional[str]) -> Optional[Neuron]:
        """The neuron registered under `hotkey` (however its address is spelled), or None for a
        stranger (never an exception)."""
        return self._by_hotkey.get(_key(hotkey))

    def __len__(self) -> int:
        return len(self.neurons)

    @property
    def age(self) -> float:
        """Seconds since this snapshot was read."""
        return time.time() - self.fetched_at


def _key(hotkey: Optional[str]) -> Optional[str]:
    try:
        return identity(hotkey) if hotkey else None
    except ValueError:
        return None  # not an address: nobody's
