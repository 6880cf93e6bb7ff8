"""Prompt-cache cost at 10^3 vs 10^6 entries (target: ratio <= 1.5). By hand:

    python benchmarks/cache.py                 # fills 10^6 entries first (~1 min, ~150 MB on disk)
    python benchmarks/cache.py --large 100000  # quicker

Times the two operations a request makes, through `PromptCache` itself: the claim of a new
prompt (`reject`: an atomic add) and the look-up of a cached one (`reuse`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from declarative_miner.cache import PromptCache  # noqa: E402


def filled(entries: int, on_hit: str) -> PromptCache:
    cache = PromptCache(tempfile.mkdtemp(prefix="dm-cache-bench-"), ttl=7200, on_hit=on_hit, size_limit=2**34)
    store = cache._store
    with store.transact():  # one transaction: filling is set-up, not what is measured
        for i in range(entries):
            store.set(hashlib.sha256(b"fill %d" % i).hexdigest(), f"completion {i}", expire=7200)
    return cache


def per_op(cache: PromptCache, keys: list[str], kind: str) -> float:
    async def answer() -> str:
        return "fresh"

    async def run() -> None:
        for key in keys:
            await cache.run(key, answer)

    start = time.perf_counter()
    asyncio.run(run())
    return (time.perf_counter() - start) / len(keys) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=5_000)
    args = parser.parse_args()
    rows = {}
    for size in (args.small, args.large):
        for on_hit in ("reject", "reuse"):
            cache = filled(size, on_hit)
            if on_hit == "reject":  # new prompts: each is claimed
                keys = [hashlib.sha256(b"new %d" % i).hexdigest() for i in range(args.ops)]
            else:  # repeats of cached prompts: each is a hit
                keys = [hashlib.sha256(b"fill %d" % (i % size)).hexdigest() for i in range(args.ops)]
            rows[size, on_hit] = min(per_op(cache, keys[i::3], on_hit) for i in range(3))
            cache.close()
    for on_hit, what in (("reject", "claim a new prompt"), ("reuse", "answer a cached prompt")):
        small, large = rows[args.small, on_hit], rows[args.large, on_hit]
        print(f"{what:<24} {args.small:>9,} entries {small:7.1f} us   {args.large:>9,} entries {large:7.1f} us   "
              f"ratio {large / small:5.2f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
