"""`mode=eval`: the composed miner, served on loopback, answers a workload sent as a validator would.

The miner is the one `serve` would run (its prompt, cache and policies, the same server code),
with three things pinned so an evaluation is offline and repeatable: the embedded dev network
and its wallets (a real hotkey is never put at risk), a free loopback port, and a fresh prompt
cache inside the job's output directory.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..chain import dev
from ..client import MinerClient
from ..errors import ConfigError, ConfigProblem
from ..imports import MissingDependency
from ..miner import Miner
from ..schema import EvalConfig
from ..summary import METRICS
from ..wallet import open_wallet
from . import dataset
from .dataset import Item


@dataclass
class Outcome:
    """One request's fate."""

    item: Item
    status: int
    seconds: float
    completion: Optional[str] = None
    first_chunk: Optional[float] = None


def offline(cfg: DictConfig, output_dir: Path) -> DictConfig:
    """`cfg` on the dev network, on a free loopback port, with a cache of its own."""
    home = cfg.home
    return OmegaConf.merge(cfg, {
        "network": {"name": "dev", "metagraph_file": f"{home}/dev/metagraph.yaml", "publish_axon": False},
        "wallet": {"name": "dev-miner", "hotkey": "default", "path": f"{home}/dev/wallets"},
        "axon": {"ip": "127.0.0.1", "port": 0, "workers": 1},
        "metrics": {"port": None},
        "cache": {"directory": str(output_dir / "cache")},
    })


def evaluate(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run the workload against the miner `cfg` describes; write and return its metrics."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the progress bar
    settings: EvalConfig = OmegaConf.to_object(cfg.eval)
    items = dataset.load(settings.dataset, settings.limit)
    scorer = _scorer() if settings.relevance else None  # loaded first: a missing package fails before work
    miner = Miner(offline(cfg, output_dir))
    try:
        outcomes, seconds, usage = _send(miner, items * settings.repeats, settings)
    finally:
        miner.close()
    metrics = measure(outcomes, seconds, usage, miner.cache.hits, scorer)
    metrics["overrides"] = overrides
    (output_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _scorer():
    try:
        from .relevance import (
            Relevance,  # torch and transformers: imported only when scoring
        )
    except MissingDependency as exc:
        raise ConfigError([ConfigProblem("eval.relevance", f"{exc}, or eval.relevance=false")]) from None
    return Relevance()


def _send(miner: Miner, work: list[Item], settings: EvalConfig) -> tuple[list[Outcome], float, dict]:
    with miner:
        validator = open_wallet(dev.DEV_VALIDATOR, "default", miner.settings.wallet.path).hotkey
        client = MinerClient(validator, "127.0.0.1", miner.port, receiver=miner.hotkey,
                             timeout=miner.settings.axon.request_timeout + 5)
        before = miner.usage.totals() if miner.usage else None
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(settings.concurrency) as pool, \
                tqdm(total=len(work), desc="eval", unit="req") as bar:
            futures = [pool.submit(_one, client, item, settings.stream) for item in work]
            for future in concurrent.futures.as_completed(futures):
                bar.update()
        seconds = time.perf_counter() - started
        client.close()
        after = miner.usage.totals() if miner.usage else None
    usage = {k: after[k] - before[k] for k in after} if after else {}
    return [future.result() for future in futures], seconds, usage


def _one(client: MinerClient, item: Item, stream: bool) -> Outcome:
    started = time.perf_counter()
    if not stream:
        reply = client.prompt(item.messages, roles=item.roles)
        return Outcome(item, reply.status, time.perf_counter() - started, reply.completion)
    first: list[float] = []
    reply = client.stream(item.messages, roles=item.roles,
                          on_chunk=lambda chunk: first or first.append(time.perf_counter() - started))
    return Outcome(item, reply.status, time.perf_counter() - started, reply.completion,
                   first[0] if first else None)


def measure(outcomes: list[Outcome], seconds: float, usage: dict, cache_hits: int, scorer: Any) -> dict[str, Any]:
    """The metrics of a finished workload (latencies of answered requests only)."""
    answered = [o for o in outcomes if o.status == 200]
    errors = dict(collections.Counter(str(o.status) for o in outcomes if o.status != 200))
    completion_tokens = usage.get("completion_tokens")
    return {
        "requests": len(outcomes),
        "answered": len(answered),
        "errors": errors,
        "latency_ms": _percentiles([o.seconds for o in answered]),
        "first_chunk_ms": _percentiles([o.first_chunk for o in answered if o.first_chunk is not None]),
        "seconds": round(seconds, 3),
        "throughput_rps": round(len(answered) / seconds, 3) if seconds else None,
        "tokens": usage or None,
        "tokens_per_s": round(completion_tokens / seconds, 1) if completion_tokens and seconds else None,
        "cache_hits": cache_hits,
        "quality": _quality(answered, scorer),
    }


def _percentiles(values: list[float]) -> Optional[dict[str, float]]:
    if not values:
        return None
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3, 2)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "mean": round(statistics.fmean(values) * 1e3, 2)}


def _quality(answered: list[Outcome], scorer: Any) -> dict[str, Any]:
    referenced = [o for o in answered if o.item.reference is not None]
    relevance = scorer.score([o.item.messages[-1] for o in answered], [o.completion for o in answered]) \
        if scorer and answered else []

    def rate(hit) -> Optional[float]:
        return round(sum(map(hit, referenced)) / len(referenced), 3) if referenced else None

    return {
        "relevance": round(statistics.fmean(relevance), 4) if relevance else None,
        "exact": rate(lambda o: o.completion.strip().lower() == o.item.reference.strip().lower()),
        "contains": rate(lambda o: o.item.reference.lower() in o.completion.lower()),
        "scored": len(relevance),
        "with_reference": len(referenced),
    }


def objective(metrics: dict[str, Any], max_p95_ms: Optional[float]) -> float:
    """What a sweeper maximises: mean relevance, or 0 when p95 latency exceeds the bound."""
    quality = metrics["quality"]["relevance"] or 0.0
    latency = metrics["latency_ms"]
    if max_p95_ms is not None and (latency is None or latency["p95"] > max_p95_ms):
        return 0.0
    return quality
