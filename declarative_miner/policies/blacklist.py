"""Blacklist rules: each looks at the caller (in memory only) and allows, denies, or abstains."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

from ..chain.metagraph import Metagraph
from ..protocol import Prompting

log = logging.getLogger(__name__)

Decision = Optional[tuple[bool, str]]  # (allowed, reason), or None when the rule does not decide
Rule = Callable[[Prompting, Metagraph], Decision]

STAKE_UNITS = {"alpha": "alpha_stake", "tao": "tao_stake", "total": "total_stake"}


class DenyHotkeys:
    """Deny the listed hotkeys."""

    def __init__(self, hotkeys: Sequence[str] = ()):
        self.hotkeys = frozenset(hotkeys)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if request.dendrite.hotkey in self.hotkeys:
            return False, "hotkey is on the deny list"
        return None


class AllowHotkeys:
    """Allow the listed hotkeys whatever the later rules say."""

    def __init__(self, hotkeys: Sequence[str] = ()):
        self.hotkeys = frozenset(hotkeys)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if request.dendrite.hotkey in self.hotkeys:
            return True, "hotkey is on the allow list"
        return None


class Registered:
    """Deny hotkeys that are not registered on the subnet."""

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if metagraph.by_hotkey(request.dendrite.hotkey) is None:
            return False, f"hotkey is not registered on netuid {metagraph.netuid}"
        return None


class ValidatorPermit:
    """Deny hotkeys without a validator permit."""

    admits_only_validators = True

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        neuron = metagraph.by_hotkey(request.dendrite.hotkey)
        if neuron is None or not neuron.validator_permit:
            return False, "hotkey holds no validator permit"
        return None


class MinStake:
    """Deny hotkeys whose stake, in `unit` (alpha, tao or total), is below `minimum`."""

    admits_only_validators = True

    def __init__(self, minimum: float, unit: str = "total"):
        if unit not in STAKE_UNITS:
            raise ValueError(f"unit must be one of {', '.join(STAKE_UNITS)}, not {unit!r}")
        self.minimum, self.unit, self._field = float(minimum), unit, STAKE_UNITS[unit]

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        neuron = metagraph.by_hotkey(request.dendrite.hotkey)
        stake = getattr(neuron, self._field) if neuron is not None else 0.0
        if stake < self.minimum:
            return False, f"stake {stake:g} {self.unit} is below the minimum {self.minimum:g}"
        return None


RULES = {
    "deny_hotkeys": "declarative_miner.policies.blacklist:DenyHotkeys",
    "allow_hotkeys": "declarative_miner.policies.blacklist:AllowHotkeys",
    "registered": "declarative_miner.policies.blacklist:Registered",
    "validator_permit": "declarative_miner.policies.blacklist:ValidatorPermit",
    "min_stake": "declarative_miner.policies.blacklist:MinStake",
}


class Blacklist:
    """Ordered rules; the first that decides wins, and a caller no rule decides on is allowed."""

    def __init__(self, rules: Sequence[tuple[str, Rule]]):
        self.rules = list(rules)

    def check(self, request: Prompting, metagraph: Metagraph) -> tuple[bool, str]:
        """(blacklisted, reason), as the seed's `blacklist` returns."""
        for name, rule in self.rules:
            decision = rule(request, metagraph)
            if decision is not None:
                allowed, reason = decision
                return not allowed, f"{name}: {reason}"
        return False, "no rule denied this hotkey"

    @property
    def admits_non_validators(self) -> bool:
        """True when no rule restricts callers to validators (worth a warning at start-up)."""
        return not any(getattr(rule, "admits_only_validators", False) for _, rule in self.rules)
