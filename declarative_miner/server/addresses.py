"""Who a connection or request comes from, by address: resolved and normalised in one place.

An IPv4 peer of a dual-stack socket (`axon.ip=::`) is `::ffff:a.b.c.d`, and a proxy may write that
form too: it is the IPv4 address `a.b.c.d`, for the blacklist's IP rules and for every count. Per-address
bounds and shedding count an IPv6 caller by its prefix (`axon.ipv6_prefix`, a /64 by default: what one
customer of a provider usually holds), so a host cannot escape them by changing its interface id.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence

from ..networks import in_networks, parse_networks


def normalised(ip: Optional[str]) -> Optional[str]:
    """`ip` as the miner writes it (IPv4-mapped IPv6 as IPv4, IPv6 compressed), or None if not an address."""
    try:
        address = ipaddress.ip_address((ip or "").strip().split("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclass(frozen=True)
class Caller:
    """Where a request comes from: its address, the key it is counted under, and whether a trusted
    proxy named it (then the connection itself carries other callers too)."""

    address: str
    key: str
    via_proxy: bool = False


class Addresses:
    """Resolves callers: the TCP peer's address, or behind one of `trusted_proxies` the last address
    of its `X-Forwarded-For` that is not itself a trusted proxy (what a caller wrote is never believed).

    Args:
        trusted_proxies: addresses or CIDR networks.
        ipv6_prefix: bits of an IPv6 address that key its counts (64: a /64).
    """

    def __init__(self, trusted_proxies: Sequence[str] = (), ipv6_prefix: int = 64):
        self.proxies = parse_networks(trusted_proxies)
        self.ipv6_prefix = ipv6_prefix

    def key(self, address: str) -> str:
        """What `address` (normalised) is counted under: itself, or for IPv6 its prefix."""
        if ":" not in address:
            return address
        return str(ipaddress.ip_network(f"{address}/{self.ipv6_prefix}", strict=False))

    def is_proxy(self, address: Optional[str]) -> bool:
        return bool(self.proxies) and in_networks(address, self.proxies)

    def peer(self, ip: Optional[str]) -> Caller:
        """A connection's own peer."""
        address = normalised(ip) or "?"
        return Caller(address, self.key(address), self.is_proxy(address))

    def caller(self, scope: dict) -> Caller:
        """The caller of the request in ASGI `scope`."""
        peer = self.peer((scope.get("client") or (None,))[0])
        if not peer.via_proxy:
            return peer
        forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
        hops = [normalised(hop) for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop is None:
                return Caller("?", "?", True)  # a trusted proxy wrote no address: nobody is believed
            if not self.is_proxy(hop):
                return Caller(hop, self.key(hop), True)
        return Caller(peer.address, peer.key, True)  # sent by a trusted proxy itself
