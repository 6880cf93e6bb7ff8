"""Prompt-cache cost at 10^3 vs 10^6 entries (target: ratio <= 1.5), and what a restart costs. By hand:

    python benchmarks/cache.py                 # fills 10^6 entries first (~1 min, ~150 MB on disk)
    python benchmarks/cache.py --large 100000  # quicker

Times what a request asks of `PromptCache` itself (real diskcache, real shared table): the claim
of a new prompt (`reject`), a repeat answered from this process's memory (`reuse`), and a repeat
answered from disk (`reuse`, an entry a previous run saved); and the restore at start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import diskcache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from declarative_miner.cache import LocalStore, PromptCache  # noqa: E402


def key(cache: PromptCache, text: str) -> str:
    return cache.key("Prompting", {"roles": ["user"], "messages": [text]}, None)


def filled(entries: int, on_hit: str) -> tuple[PromptCache, float]:
    """A cache whose disk holds `entries` answered prompts, opened as a restart opens it."""
    directory = tempfile.mkdtemp(prefix="dm-cache-bench-")
    probe = PromptCache(7200, on_hit, "global", "bench", None)
    with diskcache.Cache(directory, size_limit=2**34) as disk, disk.transact():  # set-up, not measured
        for i in range(entries):
            disk.set(key(probe, f"fill {i}"), f"completion {i}", expire=7200)
    cache = PromptCache(7200, on_hit, "global", "bench", LocalStore(2 * entries, directory, 2**34, False))
    start = time.perf_counter()
    cache.open()
    return cache, time.perf_counter() - start


def per_op(cache: PromptCache, keys: list[str]) -> float:
    async def answer() -> str:
        return "fresh"

    async def run() -> None:
        await cache.start()
        for k in keys:
            await cache.run(k, answer)
        await cache.stop()

    start = time.perf_counter()
    asyncio.run(run())
    return (time.perf_counter() - start) / len(keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=5_000)
    args = parser.parse_args()
    rows, restore = {}, {}
    for size in (args.small, args.large):
        for op, on_hit in (("claim", "reject"), ("memory", "reuse"), ("disk", "reuse")):
            cache, restore[size] = filled(size, on_hit)
            if op == "claim":  # new prompts: each is claimed
                keys = [key(cache, f"new {i}") for i in range(args.ops)]
            elif op == "memory":  # repeats of prompts this process answered
                keys = [key(cache, f"new {i % 100}") for i in range(args.ops)]
            else:  # repeats of prompts a previous run answered
                keys = [key(cache, f"fill {i % size}") for i in range(args.ops)]
            rows[size, op] = min(per_op(cache, keys[i::3]) for i in range(3))
            cache.close()
            cache.release_memory()
    for op, what in (("claim", "claim a new prompt"), ("memory", "repeat, from memory"),
                     ("disk", "repeat, from disk")):
        small, large = rows[args.small, op], rows[args.large, op]
        print(f"{what:<22} {args.small:>9,} entries {small:7.1f} us   {args.large:>9,} entries {large:7.1f} us   "
              f"ratio {large / small:5.2f}   (target <= 1.5)")
    for size, seconds in restore.items():
        print(f"restore at start       {size:>9,} entries {seconds:7.2f} s")


if __name__ == "__main__":
    main()
