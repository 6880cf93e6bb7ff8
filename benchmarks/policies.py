"""Policy cost by metagraph size, and queue wait by stake under saturation. Run by hand:

    python benchmarks/policies.py            # prints both comparisons with their targets

1. Per-request cost of the default policies (blacklist `validators_only` + priority `stake`, built
   by the same code the miner uses) with a 256- and a 4,096-neuron metagraph. Target: ratio <= 1.1.
2. The real `Scheduler` saturated by 2 slots and a flood of low-stake requests with a few
   high-stake ones: median time in the queue, high vs low stake. Target: ratio <= 0.2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

from bittensor.sp_core import ss58_encode

from declarative_miner.chain.metagraph import Metagraph, Neuron
from declarative_miner.config import compose, to_settings
from declarative_miner.policies.blacklist import build_blacklist
from declarative_miner.policies.priority import build_priority
from declarative_miner.prompting import Prompting, TerminalInfo
from declarative_miner.runtime.scheduler import Scheduler


def hotkey(i: int) -> str:
    return ss58_encode(i.to_bytes(32, "big"), 42)


def metagraph(size: int) -> Metagraph:
    rng = random.Random(size)
    return Metagraph(netuid=1, neurons=tuple(
        Neuron(uid, hotkey(uid), validator_permit=uid % 8 == 0, total_stake=rng.uniform(0, 50_000),
               alpha_stake=0, tao_stake=0) for uid in range(size)))


def policy_cost(size: int, calls: int) -> float:
    """Nanoseconds per request for blacklist + priority, the best of five runs."""
    settings = to_settings(compose())
    blacklist = build_blacklist(settings.blacklist.rules)
    priority = build_priority(settings.priority.strategy, settings.priority.params)
    graph = metagraph(size)
    # Callers: validators, non-validators and strangers, as a public endpoint sees them.
    requests = [Prompting(dendrite=TerminalInfo(hotkey=hotkey(i), ip="127.0.0.1"))
                for i in random.Random(0).sample(range(size * 2), 512)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for i in range(calls):
            request = requests[i & 511]
            blacklisted, _ = blacklist.check(request, graph)
            if not blacklisted:
                priority(request, graph)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


async def queue_waits(low: int, high: int, work: float) -> tuple[list[float], list[float]]:
    """Queue waits (s) of low- and high-stake requests arriving faster than 2 slots serve them."""
    scheduler, loop = Scheduler(slots=2, max_waiting=10_000), asyncio.get_running_loop()
    waits: dict[str, list[float]] = {"low": [], "high": []}
    graph = Metagraph(netuid=1, neurons=(Neuron(0, hotkey(0), True, 0, 0, 50_000), Neuron(1, hotkey(1), True, 0, 0, 10)))
    priority = build_priority("stake", {})

    async def one(kind: str) -> None:
        request = Prompting(dendrite=TerminalInfo(hotkey=hotkey(0 if kind == "high" else 1)))
        arrived = loop.time()
        await scheduler.acquire(priority(request, graph), timeout=600)
        waits[kind].append(loop.time() - arrived)
        await asyncio.sleep(work)
        scheduler.release()

    kinds = ["high" if i % (low // high) == 0 else "low" for i in range(low + high)]
    tasks = []
    for kind in kinds:  # arrivals at 4x the service rate
        tasks.append(asyncio.create_task(one(kind)))
        await asyncio.sleep(work / 8)
    await asyncio.gather(*tasks)
    return waits["low"], waits["high"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("DECLARATIVE_MINER_HOME", "/tmp/dm-bench-home")

    small, large = policy_cost(256, args.calls), policy_cost(4096, args.calls)
    print("policy cost per request (validators_only + stake)")
    print(f"  256 neurons    {small:8.0f} ns")
    print(f"  4,096 neurons  {large:8.0f} ns")
    print(f"  ratio          {large / small:8.2f}   (target <= 1.1)")

    low, high = asyncio.run(queue_waits(args.requests, max(1, args.requests // 20), work=0.004))
    median_low, median_high = statistics.median(low), statistics.median(high)
    print("queue wait under saturation (2 slots, arrivals at 4x capacity)")
    print(f"  low stake   n={len(low):4d}  median {median_low * 1e3:8.2f} ms")
    print(f"  high stake  n={len(high):4d}  median {median_high * 1e3:8.2f} ms")
    print(f"  ratio high/low     {median_high / median_low:8.3f}   (target <= 0.2)")


if __name__ == "__main__":
    main()
