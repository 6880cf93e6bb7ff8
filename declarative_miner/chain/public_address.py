"""Finding the address to publish on chain when the config names none: this machine's public IPv4
address as the internet sees it, asked of well-known echo services, as bittensor 10 did."""

from __future__ import annotations

import ipaddress
from typing import Optional, Sequence

import httpx

from ..errors import ConfigError, ConfigProblem

SERVICES = ("https://api.ipify.org", "https://ifconfig.me/ip", "https://icanhazip.com")
TIMEOUT = 3.0  # seconds each service may take


def public_address(services: Optional[Sequence[str]] = None) -> str:
    """The first public IPv4 address a service reports (`SERVICES` by default), or `ConfigError`
    naming `axon.external_ip`."""
    tried = []
    for url in services or SERVICES:
        try:
            text = httpx.get(url, timeout=TIMEOUT).text.strip()
            address = ipaddress.ip_address(text)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            tried.append(f"{url}: {type(exc).__name__}")
            continue
        if address.version == 4 and address.is_global:
            return str(address)
        tried.append(f"{url}: {text} is not a public IPv4 address")
    raise ConfigError([ConfigProblem("axon.external_ip", f"missing, and this machine's public address could not be "
                                     f"found (got {'; '.join(tried)}; expected axon.external_ip=YOUR.PUBLIC.IP, or "
                                     "network.publish_axon=false)")])
