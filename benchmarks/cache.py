"""Prompt-cache cost at 10^3 vs 10^6 entries (target: ratio <= 1.5), and what a restart costs. By hand:

    python benchmarks/cache.py                 # answers 10^6 prompts first (about 15 minutes, ~500 MB on disk)
    python benchmarks/cache.py --large 100000  # quicker

Times what a request asks of `PromptCache` itself (real diskcache, real shared table): the claim
of a new prompt (`reject`), a repeat answered from this process's memory (`reuse`), and a repeat
answered from disk (`reuse`, an entry a previous run saved); and the restore at start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from declarative_miner.cache import LocalStore, PromptCache  # noqa: E402


def key(cache: PromptCache, text: str) -> str:
    return cache.key("Prompting", {"roles": ["user"], "messages": [text]}, None)


def fill(entries: int) -> str:
    """A cache directory where a previous run answered `entries` prompts (under `reuse`, so their
    completions are on disk)."""
    directory = tempfile.mkdtemp(prefix="dm-cache-bench-")
    previous = PromptCache(7200, "reuse", "global", "bench", LocalStore(2 * entries, directory, 2**34, False))
    previous.open()
    per_op(previous, [key(previous, f"fill {i}") for i in range(entries)], answer=lambda i: f"completion {i}")
    previous.close()
    previous.release_memory()
    return directory


def reopened(directory: str, entries: int, on_hit: str) -> tuple[PromptCache, float]:
    """The cache in `directory`, holding about `entries` prompts, opened as a restart opens it;
    returns it and the seconds its restore took."""
    cache = PromptCache(7200, on_hit, "global", "bench", LocalStore(2 * entries, directory, 2**34, False))
    start = time.perf_counter()
    cache.open()
    return cache, time.perf_counter() - start


def per_op(cache: PromptCache, keys: list[str], answer=lambda i: "fresh") -> float:
    """Microseconds a request spends in the cache (its answer is instant), writer included."""
    async def run() -> None:
        await cache.start()
        for i, k in enumerate(keys):
            async def answered(i=i) -> str:
                return answer(i)

            await cache.run(k, answered)
        await cache.stop()  # the queued writes are part of the cost

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
        directory = fill(size)  # once: each operation below asks prompts of its own
        for op, on_hit in (("claim", "reject"), ("memory", "reuse"), ("disk", "reuse")):
            # the operations before this one added their prompts: room for them too, or a small
            # table would drop the filled ones to make it
            cache, restore[size] = reopened(directory, size + 2 * args.ops, on_hit)
            if op == "claim":  # new prompts: each is claimed
                keys = [key(cache, f"claim {i}") for i in range(args.ops)]
            elif op == "memory":  # repeats of prompts this process answered
                keys = [key(cache, f"memory {i % 100}") for i in range(args.ops)]
            else:  # repeats of prompts a previous run answered
                keys = [key(cache, f"fill {i % size}") for i in range(args.ops)]
            rows[size, op] = min(per_op(cache, keys[i::3]) for i in range(3))
            cache.close()
            cache.release_memory()
        shutil.rmtree(directory)
    for op, what in (("claim", "claim a new prompt"), ("memory", "repeat, from memory"),
                     ("disk", "repeat, from disk")):
        small, large = rows[args.small, op], rows[args.large, op]
        print(f"{what:<22} {args.small:>9,} entries {small:7.1f} us   {args.large:>9,} entries {large:7.1f} us   "
              f"ratio {large / small:5.2f}   (target <= 1.5)")
    for size, seconds in restore.items():
        print(f"restore at start       {size:>9,} entries {seconds:7.2f} s")


if __name__ == "__main__":
    main()
