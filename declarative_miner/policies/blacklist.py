"""Blacklist rules: each looks at the caller (in memory only) and allows, denies, or abstains."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional, Sequence

from ..chain.metagraph import Metagraph
from ..checks import Problems
from ..imports import build
from ..networks import in_networks, parse_networks
from ..prompting import Prompting
from .lists import HotkeyList

log = logging.getLogger(__name__)

Decision = Optional[tuple[bool, str]]  # (allowed, reason), or None when the rule does not decide
Rule = Callable[[Prompting, Metagraph], Decision]

STAKE_UNITS = {"alpha": "alpha_stake", "tao": "tao_stake", "total": "total_stake"}


class DenyHotkeys:
    """Deny the listed hotkeys (inline, and/or one per line in `file`, re-read on change)."""

    def __init__(self, hotkeys: Sequence[str] = (), file: Optional[str] = None):
        self.hotkeys = HotkeyList(hotkeys, file)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if request.dendrite.hotkey in self.hotkeys:
            return False, "hotkey is on the deny list"
        return None


class AllowHotkeys:
    """Allow the listed hotkeys whatever the later rules say (inline and/or from `file`)."""

    def __init__(self, hotkeys: Sequence[str] = (), file: Optional[str] = None):
        self.hotkeys = HotkeyList(hotkeys, file)

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


class _PeerRule:
    """A rule on the caller's address, against CIDR networks; runs before every hotkey rule."""

    peer_only = True

    def __init__(self, networks: Sequence[str]):
        self.networks = parse_networks(networks)


class AllowIps(_PeerRule):
    """Deny any caller address outside these networks (CIDR); those inside go on to the next rules."""

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if not in_networks(request.dendrite.ip, self.networks):
            return False, f"address {request.dendrite.ip} is not on the allow list"
        return None


class DenyIps(_PeerRule):
    """Deny caller addresses inside these networks (CIDR)."""

    def __call__(self, request: Prompting, metagraph: Metagraph) -> Decision:
        if in_networks(request.dendrite.ip, self.networks):
            return False, f"address {request.dendrite.ip} is on the deny list"
        return None


RULES = {
    "deny_hotkeys": "declarative_miner.policies.blacklist:DenyHotkeys",
    "allow_hotkeys": "declarative_miner.policies.blacklist:AllowHotkeys",
    "registered": "declarative_miner.policies.blacklist:Registered",
    "validator_permit": "declarative_miner.policies.blacklist:ValidatorPermit",
    "min_stake": "declarative_miner.policies.blacklist:MinStake",
    "allow_ips": "declarative_miner.policies.blacklist:AllowIps",
    "deny_ips": "declarative_miner.policies.blacklist:DenyIps",
    "rate_limit": "declarative_miner.policies.rate_limit:RateLimit",
}


class Blacklist:
    """Ordered rules; the first that decides wins, and a caller no rule decides on is allowed.

    Rules on the caller's address (`allow_ips`, `deny_ips`: the TCP peer's, or behind one of
    `axon.trusted_proxies` the one that proxy names) run before all others, wherever they are
    listed: they are the cheapest and a flood should cost nothing more.
    """

    def __init__(self, rules: Sequence[tuple[str, Rule]]):
        rules = list(rules)
        self.rules = [r for r in rules if getattr(r[1], "peer_only", False)] + \
                     [r for r in rules if not getattr(r[1], "peer_only", False)]
        self._counted = [rule for _, rule in self.rules if hasattr(rule, "count")]
        self.shareable = [rule for _, rule in self.rules if hasattr(rule, "share")]  # state other processes need

    def check(self, request: Prompting, metagraph: Metagraph) -> tuple[bool, str]:
        """(blacklisted, reason), as the seed's `blacklist` returns."""
        for name, rule in self.rules:
            decision = rule(request, metagraph)
            if decision is not None:
                allowed, reason = decision
                return not allowed, f"{name}: {reason}"
        return False, "no rule denied this hotkey"

    def count(self, request: Prompting) -> None:
        """Record a verified request with the rules that keep budgets (rate limits).

        Counting only verified requests means nobody can spend a validator's budget by
        claiming its hotkey in an unsigned header.
        """
        for rule in self._counted:
            rule.count(request)

    @property
    def admits_non_validators(self) -> bool:
        """True when no rule restricts callers to validators (worth a warning at start-up)."""
        return not any(getattr(rule, "admits_only_validators", False) for _, rule in self.rules)


def build_blacklist(rules: Mapping[str, Any]) -> Blacklist:
    """The `Blacklist` of `blacklist.rules`, in order: each rule a short name of RULES or a
    `_target_`, with its options. Raises `ConfigError` naming every rule that cannot be built."""
    built, problems = [], Problems()
    for name, options in rules.items():
        options = dict(options or {})
        target = options.pop("_target_", name)
        rule = problems.attempt(lambda: build(target, options, f"blacklist.rules.{name}", aliases=RULES,
                                              called_with=("request", "metagraph")))
        if rule is not None:
            log.info("Instantiating blacklist rule %s <%s>", name, RULES.get(target, target))
            built.append((name, rule))
    problems.raise_if_any()
    return Blacklist(built)
