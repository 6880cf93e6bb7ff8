"""Cross-field checks of a composed config, and collecting problems so all are reported at once."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Callable

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis.Redis.from_url reads
UNSPECIFIED = ("0.0.0.0", "::")  # a bind to every interface: what to publish is found (chain/public_address.py)

from .errors import ConfigError, ConfigProblem
from .networks import parse_networks
from .schema import MAX_SHED_FOR, WIRE_FORMATS, MinerConfig


class Problems:
    """Collects ConfigErrors from independent build steps so all are reported together."""

    def __init__(self) -> None:
        self.found: list[ConfigProblem] = []

    def attempt(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except ConfigError as exc:
            self.found.extend(exc.problems)
            return None

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text == "localhost"
    return True


def _is_network(text: str) -> bool:
    try:
        parse_networks([text])
    except ValueError:
        return False
    return True


def _public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False  # localhost


def live_network_problems(settings: MinerConfig) -> list[ConfigProblem]:
    """What a live network refuses that the dev network allows: the dev wallet, a missing subnet, and
    publishing an address validators cannot reach (a local subtensor, `network=local`, may publish any).
    A loopback bind behind a proxy on the same host is fine: `axon.external_ip` says what to publish."""
    network, axon, problems = settings.network, settings.axon, []
    if network.netuid is None:
        problems.append(ConfigProblem("network.netuid", f"missing (got none on {network.name}; expected the subnet "
                                      "this miner serves: network.netuid=N)"))
    dev_wallets = Path(settings.home).expanduser() / "dev" / "wallets"
    if Path(settings.wallet.path).expanduser().absolute() == dev_wallets.absolute():
        problems.append(ConfigProblem("wallet.path", f"the password-less dev wallet on {network.name} (got "
                                      f"{settings.wallet.path}; expected your own: wallet=bittensor "
                                      "wallet.name=COLDKEY wallet.hotkey=HOTKEY)"))
    if network.publish_axon and network.name != "local":
        key, published = ("axon.external_ip", axon.external_ip) if axon.external_ip else ("axon.ip", axon.ip)
        if published not in UNSPECIFIED and _is_address(published) and not _public(published):
            problems.append(ConfigProblem(key, f"not a public address (got {published}, which validators on "
                                          f"{network.name} cannot reach; expected the address to publish: "
                                          "axon.external_ip=YOUR.PUBLIC.IP, or network.publish_axon=false)"))
    return problems


def check(settings: MinerConfig) -> list[ConfigProblem]:
    """Cross-field rules the schema's types cannot express."""
    axon, problems = settings.axon, []

    def need(ok: bool, key: str, got: Any, expected: str) -> None:
        if not ok:
            problems.append(ConfigProblem(key, f"out of range (got {got}; expected {expected})"))

    for key in ("ip", "external_ip"):
        address = getattr(axon, key)
        if address is not None and not _is_address(address):
            problems.append(ConfigProblem(f"axon.{key}", f"not an address (got {address}; expected an IPv4 or IPv6 "
                                                          "address, or localhost)"))
    for proxy in axon.trusted_proxies:
        if not _is_network(proxy):
            problems.append(ConfigProblem("axon.trusted_proxies", f"not a network (got {proxy}; expected an IPv4 or "
                                                                  "IPv6 address or CIDR, such as 127.0.0.1 or 10.0.0.0/8)"))
    for key in ("port", "external_port"):
        port = getattr(axon, key)
        need(port is None or 0 <= port <= 65535, f"axon.{key}", port, "a port from 0 to 65535")
    need(settings.keep_runs >= 0, "keep_runs", settings.keep_runs, "0 (keep all) or more")
    need(axon.max_concurrency >= 1, "axon.max_concurrency", axon.max_concurrency, "at least 1")
    need(axon.max_queue >= 0, "axon.max_queue", axon.max_queue, "0 or more")
    need(axon.request_timeout > 0, "axon.request_timeout", axon.request_timeout, "seconds > 0")
    need(axon.max_body_bytes > 0, "axon.max_body_bytes", axon.max_body_bytes, "bytes > 0")
    need(axon.max_header_bytes >= 1024, "axon.max_header_bytes", axon.max_header_bytes, "at least 1024 bytes")
    need(axon.workers >= 1, "axon.workers", axon.workers, "at least 1")
    store = settings.state.store if axon.replay_store is None else axon.replay_store
    where = "state.store" if axon.replay_store is None else "axon.replay_store"
    need(store in ("memory", "disk", "auto") or store.startswith(REDIS_SCHEMES), where, store,
         "disk, memory or redis://host:port/db")
    need(not (store == "memory" and axon.workers > 1 and axon.replay_store is None), where, store,
         f"disk or redis with axon.workers={axon.workers}: memory is one process's")
    need(1 <= axon.ipv6_prefix <= 128, "axon.ipv6_prefix", axon.ipv6_prefix, "bits from 1 to 128 (64: a /64)")
    if settings.metrics.port is not None:
        need(0 <= settings.metrics.port <= 65535, "metrics.port", settings.metrics.port,
             "a port from 0 to 65535, or null for no listener")
    need(axon.max_connections >= 1, "axon.max_connections", axon.max_connections, "at least 1")
    need(axon.max_connections_per_ip >= 1, "axon.max_connections_per_ip", axon.max_connections_per_ip, "at least 1")
    need(axon.max_refusals_per_ip >= 0, "axon.max_refusals_per_ip", axon.max_refusals_per_ip, "0 (never shed) or more")
    need(0 < axon.shed_for <= MAX_SHED_FOR, "axon.shed_for", axon.shed_for, f"seconds > 0, at most {MAX_SHED_FOR:g}")
    need(axon.max_unverified_per_ip >= 1, "axon.max_unverified_per_ip", axon.max_unverified_per_ip, "at least 1")
    need(axon.max_unverified_bytes >= axon.max_body_bytes, "axon.max_unverified_bytes", axon.max_unverified_bytes,
         f"at least axon.max_body_bytes ({axon.max_body_bytes}), or no body that large could be read")
    need(axon.max_age > 0, "axon.max_age", axon.max_age, "seconds > 0")
    need(bool(axon.wire_formats) and set(axon.wire_formats) <= set(WIRE_FORMATS), "axon.wire_formats",
         list(axon.wire_formats), f"a non-empty list of {', '.join(WIRE_FORMATS)}")
    need(axon.allowed_skew >= 0, "axon.allowed_skew", axon.allowed_skew, "seconds >= 0")
    need(settings.cache.ttl >= 0, "cache.ttl", settings.cache.ttl, "seconds >= 0 (0 disables)")
    need(settings.cache.scope in ("global", "caller"), "cache.scope", settings.cache.scope, "global or caller")
    need(settings.cache.max_entries > 0, "cache.max_entries", settings.cache.max_entries, "an integer > 0")
    need(settings.network.sync_interval > 0, "network.sync_interval", settings.network.sync_interval, "seconds > 0")
    network = settings.network
    need(network.name in ("dev", "finney", "test", "local") or network.name.startswith(("ws://", "wss://")),
         "network.name", network.name, "dev, finney, test, local or a ws:// endpoint")
    need(network.max_snapshot_age is None or network.max_snapshot_age > 0, "network.max_snapshot_age",
         network.max_snapshot_age, "seconds > 0, or null for 3 x sync_interval")
    if network.name != "dev":
        problems.extend(live_network_problems(settings))
    need("_target_" in settings.prompt, "prompt._target_", None, "an import path to the prompt callable")
    evaluation = settings.eval
    need(evaluation.concurrency >= 1, "eval.concurrency", evaluation.concurrency, "at least 1")
    need(evaluation.repeats >= 1, "eval.repeats", evaluation.repeats, "at least 1")
    need(evaluation.limit is None or evaluation.limit >= 1, "eval.limit", evaluation.limit, "at least 1, or null for all")
    return problems
