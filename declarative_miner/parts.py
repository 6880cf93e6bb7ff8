"""The composition root: every part of a miner, built from the settings in one place.

`Miner` (the seed's API) holds what `build_parts` returns and wires its own overridable methods
(`blacklist`, `priority`, `prompt`) into the server `build_app` makes. Every builder takes plain
settings; every problem found is reported together, so `mode=validate` checks all of it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from bittensor import http_auth

from .cache import PromptCache, answerer, open_store
from .chain.live import LiveChain
from .chain.network import connect, open_miner_wallet
from .chain.sync import MetagraphSync
from .checks import Problems, check
from .imports import build
from .policies.blacklist import Blacklist, build_blacklist
from .policies.cells import SharedCells, open_cells
from .policies.priority import build_priority
from .prompts.usage import Usage
from .redis_link import REDIS_SCHEMES, check_reachable
from .schema import MinerConfig
from .server.app import Limits, MinerApp
from .server.metrics import Metrics
from .server.replay import open_store as open_nonce_store
from .server.scheduler import Scheduler
from .server.shedding import SHARED_ADDRESSES, Shedding
from .server.wire import open_wire_formats
from .synapses import Synapse, build_synapses


@dataclass
class Parts:
    """What a miner is made of, before it serves."""

    wallet: Any
    not_created: list  # dev files mode=validate found missing (the first run creates them)
    sync: Optional[MetagraphSync]
    chain: Optional[LiveChain]
    blacklist: Blacklist
    priority: Callable
    prompt: Any  # the `prompt` group's callable
    synapses: dict[str, Synapse]
    cache: PromptCache
    budgets: Any  # rate-limit cells shared by workers and machines, or None
    refusals: Any  # the refusals of unverified requests, counted by address across workers (or None)


def build_parts(s: MinerConfig, *, wallet: Any = None, subtensor: Any = None,
                own_prompt: Optional[str] = None) -> Parts:
    """Every part `s` declares, or `ConfigError` with every problem found.

    `wallet`/`subtensor` replace the configured ones; `own_prompt` names a subclass whose own
    `prompt` answers (it is part of the cache's namespace)."""
    problems = Problems()
    problems.found.extend(check(s))
    wallet, not_created = (wallet, []) if wallet else (problems.attempt(lambda: open_miner_wallet(s)) or (None, []))
    sync = chain = None
    if wallet is not None and not problems.found:  # never dial a chain on a bad config
        sync, chain = problems.attempt(lambda: connect(s, wallet.hotkey.ss58_address, subtensor,
                                                       stand_in=bool(not_created))) or (None, None)
    blacklist = problems.attempt(lambda: build_blacklist(s.blacklist.rules))
    priority = problems.attempt(lambda: build_priority(s.priority.strategy, s.priority.params))
    prompt = problems.attempt(lambda: build(s.prompt.get("_target_", ""), {k: v for k, v in s.prompt.items()
                                                                           if k != "_target_"}, "prompt._target_",
                                            called_with=("request",)))
    synapses = problems.attempt(lambda: build_synapses(s.synapses))
    problems.raise_if_any()
    shareable = blacklist.shareable
    budgets = open_cells(s.axon.replay_store, s.axon.workers,
                         max(rule.cells.max_callers for rule in shareable)) if shareable else None
    for rule in shareable if budgets is not None else ():
        rule.share(budgets)  # rate limits are one budget across workers (and machines)
    refusals = SharedCells(SHARED_ADDRESSES) if s.axon.workers > 1 and s.axon.max_refusals_per_ip else None
    return Parts(wallet, not_created, sync, chain, blacklist, priority, prompt, synapses,
                 _prompt_cache(s, own_prompt), budgets, refusals)


def _prompt_cache(s: MinerConfig, own_prompt: Optional[str]) -> PromptCache:
    c = s.cache
    store = open_store(s.axon.replay_store, capacity=c.max_entries,
                       directory=str(Path(c.directory).expanduser()), size_limit=c.size_limit,
                       sync_writes=c.sync_writes, lease=s.axon.request_timeout + 1) if c.ttl > 0 else None
    return PromptCache(c.ttl, c.on_hit.value, c.scope, c.namespace or answerer(s.prompt, own_prompt), store)


def check_stores(s: MinerConfig) -> None:
    """What `mode=validate` asks beyond building: the shared store the server would use answers."""
    if s.axon.replay_store.startswith(REDIS_SCHEMES):
        check_reachable(s.axon.replay_store, "axon.replay_store")


def open_replay_store(s: MinerConfig):
    """The replay store every wire format shares, as `axon.replay_store` names it."""
    a = s.axon
    return open_nonce_store(a.replay_store, a.workers, s.home, max_age=a.max_age, allowed_skew=a.allowed_skew)


def build_app(s: MinerConfig, parts: Parts, miner: Any, nonces: Any) -> MinerApp:
    """The ASGI app serving `parts`, with `miner`'s (possibly overridden) methods in the pipeline."""
    a = s.axon
    scheduler = Scheduler(a.max_concurrency, a.max_queue)
    return MinerApp(
        wire_formats=open_wire_formats(parts.wallet.hotkey.ss58_address, accepted=a.wire_formats, max_age=a.max_age,
                                       allowed_skew=a.allowed_skew, require_receiver=a.require_receiver,
                                       nonce_store=nonces),
        synapses=parts.synapses,
        sign_reply=functools.partial(http_auth.sign, parts.wallet.hotkey) if a.sign_responses else None,
        shedding=Shedding(a.max_refusals_per_ip, a.shed_for, shared=parts.refusals),
        blacklist=miner.blacklist, priority=miner.priority, answer=miner._answer, stream=miner._answer_stream,
        health=miner.health, unavailable=miner.unavailable, on_verified=parts.blacklist.count,
        scheduler=scheduler, metrics=_metrics(scheduler, parts.cache, lambda: miner.metagraph, miner.usage),
        limits=Limits(a.max_body_bytes, a.request_timeout, a.max_concurrency + a.max_queue, a.max_unverified_per_ip),
        on_startup=[miner._announce, parts.sync.start, parts.cache.start],
        on_shutdown=[parts.sync.stop, parts.cache.stop, miner._close_prompt, miner._save_nonces],
    )


def _metrics(scheduler: Scheduler, cache: PromptCache, metagraph: Callable, usage: Optional[Usage]) -> Metrics:
    metrics = Metrics({
        "miner_queue_depth": ("Requests waiting for a slot", lambda: scheduler.waiting),
        "miner_overrunning_prompts": ("Prompts still running in threads after their request ended",
                                      lambda: scheduler.overrunning),
        "miner_cache_hits": ("Prompts answered from the cache since start", lambda: cache.hits),
        "miner_cache_unsaved": ("Answered prompts not yet written to disk (what a kill -9 would lose)",
                                lambda: cache.unsaved),
        "miner_metagraph_age_seconds": ("Seconds since the metagraph was read", lambda: metagraph().age),
        "miner_metagraph_block": ("Block of the metagraph in use", lambda: metagraph().block),
    })
    for count in ("prompt_tokens", "completion_tokens") if usage is not None else ():
        metrics.gauge(f"miner_{count}", f"{count.replace('_', ' ').capitalize()} the model reported since start",
                      lambda count=count: usage.totals()[count])
    return metrics
