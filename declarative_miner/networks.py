"""Address ranges as the config writes them (an address, or CIDR such as 10.0.0.0/8), and who is in them."""

from __future__ import annotations

import ipaddress
from typing import Optional, Sequence, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_networks(entries: Sequence[str]) -> list[Network]:
    """Each entry as a network (host bits allowed: 10.1.2.3/8 is 10.0.0.0/8); ValueError names a bad one."""
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def in_networks(ip: Optional[str], networks: Sequence[Network]) -> bool:
    """Whether address `ip` is in any of `networks` (never, for what is not an address)."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in network for network in networks)
