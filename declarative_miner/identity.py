"""A caller is its public key, however its address is spelled.

An SS58 address is a network prefix and a 32-byte public key: every prefix spells a valid address of
the same key, and an sr25519 signature checks out against the key alone. So whatever a request names
its signer with, the miner knows it by one spelling of the key (the generic prefix, 42, as validators
write it): replay records, deny and allow lists, budgets, priority, the cache's caller scope and the
metagraph look-ups all meet the same string.
"""

from __future__ import annotations

import functools

from bittensor.sp_core import ss58_decode, ss58_encode

from .errors import NotAuthenticated

GENERIC_PREFIX = 42  # the substrate generic prefix, which bittensor uses


@functools.lru_cache(maxsize=65_536)  # bounded: a flood of new addresses only churns it
def identity(address: str) -> str:
    """The key `address` names, spelled with the generic prefix; ValueError if it is no SS58 address."""
    try:
        key = ss58_decode(address)
    except Exception:  # bittensor_core raises its own error types for a bad checksum or length
        raise ValueError(f"{address!r} is not an SS58 address") from None
    return ss58_encode(key, GENERIC_PREFIX)


def claimed_identity(address: str) -> str:
    """`identity` of the address a request claims, or `NotAuthenticated` naming what is wrong."""
    try:
        return identity(address)
    except ValueError as exc:
        raise NotAuthenticated(f"the claimed hotkey is invalid: {exc}") from None
