"""The composition root: every part of a miner, built from the settings in one place.

`build_parts` builds what the config declares and checks all of it (every problem reported together),
touching no socket and opening no store: `mode=validate` is this plus `check_serving`, and serving is
this plus a socket. `build_app` wires the parts (and `Miner`'s overridable methods) into the ASGI app,
without side effects: the stores open in each serving process's ASGI lifespan.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .auth.formats import open_wire_formats
from .auth.reply_signature import ReplySigner
from .cache import PromptCache, answerer
from .chain.clock import check_clock
from .chain.live import LiveChain
from .chain.network import connect, open_miner_wallet
from .chain.sync import MetagraphSync
from .chain.public_address import public_address
from .checks import UNSPECIFIED, Problems, check
from .errors import ConfigError, ConfigProblem
from .imports import Checked, build, locate
from .policies.blacklist import Blacklist, build_blacklist
from .policies.priority import build_priority
from .processes import alive
from .runtime.readiness import Readiness
from .runtime.scheduler import Scheduler
from .schema import MinerConfig, Mode
from .server.addresses import Addresses
from .server.app import MinerApp
from .server.connections import Connections
from .server.metrics import Metrics
from .server.open_files import OTHER_FILES, connections_allowed
from .server.pipeline import Limits, Pipeline
from .server.serving import bind
from .server.request_log import RequestLog
from .server.shedding import Shedding
from .state import Store, kind_of, open_store
from .state.memory import MemoryCells
from .state.stores import CULL_INTERVAL
from .synapses import Synapse, build_synapses, check_arguments

log = logging.getLogger(__name__)

READY_INTERVAL = 30.0  # seconds between the readiness checks (GET /ready)
MAX_CALLERS = 100_000  # rate budgets and refusal counts the memory store keeps at once (least recent out)


@dataclass
class Parts:
    """What a miner is made of, before it serves."""

    settings: MinerConfig
    wallet: Any
    not_created: list  # dev files mode=validate found missing (the first run creates them)
    sync: MetagraphSync
    chain: Optional[LiveChain]
    blacklist: Blacklist
    priority: Callable
    prompt: Any  # the `prompt` group's callable
    synapses: dict[str, Synapse]
    store: Store
    cache: PromptCache
    metrics: Metrics
    published_ip: Optional[str]  # what goes on chain (axon.external_ip, axon.ip, or the address found); None: nothing


def build_parts(s: MinerConfig, *, wallet: Any = None, subtensor: Any = None,
                own_prompt: Optional[str] = None) -> Parts:
    """Every part `s` declares, or `ConfigError` with every problem found.

    `wallet`/`subtensor` replace the configured ones; `own_prompt` names a subclass whose own
    `prompt` answers (it is part of the cache's namespace)."""
    problems = Problems()
    problems.found.extend(check(s))
    wallet, not_created = (wallet, []) if wallet else (problems.attempt(lambda: open_miner_wallet(s)) or (None, []))
    sync = chain = None
    published = problems.attempt(lambda: _published_ip(s)) if not problems.found else None
    if wallet is not None and not problems.found:  # never dial a chain on a bad config
        sync, chain = problems.attempt(lambda: connect(s, wallet.hotkey.ss58_address, subtensor,
                                                       stand_in=bool(not_created))) or (None, None)
    blacklist = problems.attempt(lambda: build_blacklist(s.blacklist.rules))
    priority = problems.attempt(lambda: build_priority(s.priority.strategy, s.priority.params))
    prompt = problems.attempt(lambda: build(s.prompt.get("_target_", ""), {k: v for k, v in s.prompt.items()
                                                                           if k != "_target_"}, "prompt._target_",
                                            called_with=("request",), checking=s.mode == Mode.validate))
    synapses = problems.attempt(lambda: build_synapses(s.synapses, s.types))
    for name, synapse in (synapses or {}).items() if prompt is not None else ():
        if synapse.answer is None:  # answered by the prompt: its arguments bind to the prompt's call
            problems.attempt(lambda: check_arguments(locate(prompt.path) if isinstance(prompt, Checked) else prompt,
                                                     synapse.arguments, f"synapses.{name}.arguments"))
    problems.raise_if_any()
    if s.axon.replay_store is not None:
        log.warning("axon.replay_store is deprecated and goes in a later release: say state.store=%s", store_setting(s))
    metrics = Metrics()
    sync.listen(lambda graph: _observe_graph(metrics, graph, chain, wallet.hotkey.ss58_address))
    store = _store(s)
    cache = PromptCache(s.cache.ttl, s.cache.on_hit.value, s.cache.scope,
                        s.cache.namespace or answerer(s.prompt, own_prompt), store.prompts, hit=metrics.cache_hits.inc)
    return Parts(s, wallet, not_created, sync, chain, blacklist, priority, prompt, synapses, store, cache, metrics,
                 published)


def _observe_graph(metrics: Metrics, graph: Any, chain: Optional[LiveChain], hotkey: str) -> None:
    """The metagraph gauges, and this miner's standing in it (a live chain's columns, else the uid)."""
    metrics.metagraph_block.set(graph.block)
    metrics.metagraph_time.set(graph.fetched_at)
    if (standing := chain.standing() if chain is not None else None) is not None:
        metrics.stand(**standing)
    else:
        mine = graph.by_hotkey(hotkey)
        metrics.stand(mine.uid if mine is not None else None)


def _readiness(parts: Parts, miner: Any) -> Readiness:
    """The background checks behind `GET /ready`: a fresh metagraph, the model server (a prompt's
    `probe`), and on a live chain this clock and the published endpoint."""
    a, chain = parts.settings.axon, parts.chain
    checks = [miner.unavailable]
    if (probe := getattr(parts.prompt, "probe", None)) is not None:
        checks.append(probe)
    if chain is not None:
        checks.append(lambda: check_clock(chain.clock, a.allowed_skew, a.max_age, parts.metrics.clock_lag.set))
        if parts.published_ip is not None:
            checks.append(lambda: chain.keep_published(parts.wallet, parts.published_ip, a.external_port or miner.port))
    interval = min(READY_INTERVAL, parts.settings.network.sync_interval)  # a metagraph read is news to check
    return Readiness(checks, interval, on_change=parts.metrics.ready.set)


def _published_ip(s: MinerConfig) -> Optional[str]:
    """The address to publish on a live network: `axon.external_ip`, else `axon.ip`, else (a bind to
    every interface) this machine's public address, found now."""
    if s.network.name == "dev" or not s.network.publish_axon:
        return None
    if s.axon.external_ip:
        return s.axon.external_ip
    return public_address() if s.axon.ip in UNSPECIFIED else s.axon.ip


def store_setting(s: MinerConfig) -> str:
    """`state.store`, or what the deprecated `axon.replay_store` said instead."""
    old = s.axon.replay_store
    if old is None:
        return s.state.store
    return {"auto": "disk", "memory": "disk" if s.axon.workers > 1 else "memory"}.get(old, old)


def _store(s: MinerConfig) -> Store:
    a, c = s.axon, s.cache
    return open_store(store_setting(s), home=Path(s.home).expanduser(), cache_directory=Path(c.directory).expanduser(),
                      retention=a.max_age + a.allowed_skew + 1.0, allowed_skew=a.allowed_skew,
                      lease=a.request_timeout + 1.0, max_entries=c.max_entries, size_limit=c.size_limit,
                      sync_writes=c.sync_writes, max_callers=MAX_CALLERS)


def serving_marker(s: MinerConfig) -> Path:
    """The file a serving miner keeps in its home: its pid and port (what `mode=validate` reads)."""
    return Path(s.home).expanduser() / "run" / "serving.json"


def check_serving(parts: Parts) -> list[str]:
    """What serving needs beyond the parts, checked without serving: the store opens (a writable
    directory, a Redis that answers) and the ports are free. Raises `ConfigError` naming the key;
    returns notes (a port is held by this home's own running miner)."""
    s = parts.settings
    listeners = [("axon.port", s.axon.ip, s.axon.port)]
    if s.metrics.port is not None:
        listeners.append(("metrics.port", s.metrics.host, s.metrics.port))
    running = _running(serving_marker(s)) or {}
    notes = []
    for key, host, port in listeners:
        try:
            bind(host, port, key).close()
        except ConfigError:
            if not port or running.get(key) != port:
                raise
            notes.append(f"{key} {port} is held by this home's running miner (pid {running['pid']}): stop it "
                         f"before serving this config, or choose another {key}")
    try:
        parts.store.check()
    except Exception as exc:  # an unwritable home, an unreachable Redis
        key = "axon.replay_store" if parts.settings.axon.replay_store is not None else "state.store"
        raise ConfigError([ConfigProblem(key, f"cannot open it (got {store_setting(parts.settings)}: "
                                         f"{getattr(exc, 'reason', None) or exc}; expected a writable directory "
                                         "under home, or a reachable Redis)")]) from None
    return notes


def _running(marker: Path) -> Optional[dict]:
    try:
        running = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return running if isinstance(running, dict) and alive(running.get("pid", 0)) else None


def clear_cache(parts: Parts) -> int:
    """Forget every stored prompt (`cache.clear=true`, once at start, before any worker serves)."""
    parts.store.prompts.open()
    try:
        return parts.cache.clear()
    finally:
        parts.store.prompts.close()


def build_app(parts: Parts, miner: Any, *, connections: bool = True) -> MinerApp:
    """The ASGI app serving `parts`, with `miner`'s (possibly overridden) methods in the pipeline.

    `connections`: whether the miner's own server runs it (its connection guards are told when a
    response ends); the app alone serves under any ASGI server."""
    a = parts.settings.axon
    store, metrics = parts.store, parts.metrics
    addresses = Addresses(a.trusted_proxies, a.ipv6_prefix)
    # A refusal is counted on the event loop, at flood rates: in this process's memory when it is the
    # only one serving (exact, with no store write a refusal), else where the processes share it.
    refusals = store.cells if a.workers > 1 or store.kind == "redis" else MemoryCells(MAX_CALLERS)
    shedding = Shedding(a.max_refusals_per_ip, a.shed_for, refusals)
    for rule in parts.blacklist.shareable:
        rule.share(store.cells)  # rate limits are one budget across processes (and machines)
    scheduler = Scheduler(a.max_concurrency, a.max_queue, waiting=metrics.queued, overrunning=metrics.overrunning)
    pipeline = Pipeline(
        wire_formats=open_wire_formats(parts.wallet.hotkey.ss58_address, accepted=a.wire_formats, max_age=a.max_age,
                                       allowed_skew=a.allowed_skew, require_receiver=a.require_receiver,
                                       nonce_store=store.nonces),
        synapses=parts.synapses, blacklist=miner.blacklist, priority=miner.priority, answer=miner._answer,
        stream=miner._answer_stream, scheduler=scheduler, shedding=shedding, on_verified=parts.blacklist.count,
        limits=Limits(a.max_body_bytes, a.request_timeout, a.max_concurrency + a.max_queue, a.max_unverified_per_ip,
                      a.max_unverified_bytes),
        unavailable=miner.unavailable, registered=lambda hotkey: miner.metagraph.by_hotkey(hotkey) is not None)
    guards = Connections(max_connections=_connections_allowed(a.max_connections),
                         max_per_address=a.max_connections_per_ip, header_timeout=a.request_timeout,
                         addresses=addresses, shedding=shedding) if connections else None
    requests, upkeep, readiness = RequestLog(), _Upkeep(store), _readiness(parts, miner)
    return MinerApp(
        pipeline=pipeline, addresses=addresses, shedding=shedding, health=miner.health, metrics=metrics,
        requests=requests, max_header_bytes=a.max_header_bytes, connections=guards,
        ready=lambda: readiness.reasons, validator=lambda hotkey: _holds_permit(miner.metagraph, hotkey),
        sign_reply=ReplySigner(parts.wallet.hotkey) if a.sign_responses else None,
        on_startup=[upkeep.start, miner._start_prompt, parts.sync.start, requests.start, readiness.start,
                    miner._announce],
        on_shutdown=[readiness.stop, parts.sync.stop, miner._close_prompt, requests.stop, upkeep.stop])


def _holds_permit(metagraph: Any, hotkey: str) -> bool:
    neuron = metagraph.by_hotkey(hotkey)
    return neuron is not None and neuron.validator_permit


def _connections_allowed(wanted: int) -> int:
    allowed = connections_allowed(wanted)
    if allowed < wanted:
        log.warning("Open files are limited to %d (ulimit -n; LimitNOFILE= in a systemd unit): serving at most %d "
                    "connections, not axon.max_connections=%d. Raise the limit to serve them all", allowed + OTHER_FILES,
                    allowed, wanted)
    return allowed


class _Upkeep:
    """The store in this serving process: opened at start-up (after a supervisor's fork each worker
    has its own connections), culled in the background, closed at shut-down."""

    def __init__(self, store: Store):
        self.store = store
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self.store.open()
        self._task = asyncio.get_running_loop().create_task(self._cull_forever())

    async def _cull_forever(self) -> None:
        while True:
            await asyncio.sleep(CULL_INTERVAL)
            try:
                await asyncio.to_thread(self.store.cull)
            except Exception as exc:  # a busy or failing disk: the next sweep tries again
                log.warning("culling the state store failed: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.store.close()


def kind(parts: Parts) -> str:
    """Where state lives, as the summary says it."""
    return kind_of(store_setting(parts.settings))
