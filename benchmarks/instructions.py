"""Instructions a request, in process, by variant: a count that repeats on a shared, noisy machine. By hand:

    python benchmarks/instructions.py                 # floor, default miner, cache.ttl=0: about 2 minutes
    python benchmarks/instructions.py --against HEAD  # and the default miner as of a git revision

Each variant runs in a process of its own under valgrind's callgrind, which counts the instructions
executed while `--requests` pre-signed requests go through the app exactly as in benchmarks/app.py
(after a warm-up; counting is switched on around them with callgrind_control). The counts repeat to
within a percent from run to run, where timings here move by 10%, so they can decide between two
versions of the same Python code. They are not CPU time: most of the floor's work is its sr25519
check, compiled code that retires several instructions a cycle, so a ratio of instructions
understates the ratio of times. Needs valgrind.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

from declarative_miner.config import compose
from declarative_miner.miner import Miner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import app as in_process  # noqa: E402  (benchmarks/app.py)

FLOOR, DEFAULT, NO_CACHE = "floor (verify and echo)", "miner, default config", "miner, cache.ttl=0"
WARM_UP = 50  # requests before counting (fewer in a smaller run): the first ones meet cold caches


def count(variant: str, requests: int, against: str | None) -> int:
    """Instructions `variant` executed for `requests` requests (in a child under callgrind)."""
    with tempfile.TemporaryDirectory(prefix="dm-instructions-") as scratch:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={scratch}/callgrind.out", sys.executable, __file__,
                   "--child", variant, "--requests", str(requests), *(["--against", against] if against else [])]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (found := re.search(r"Collected : (\d+)", result.stderr)):
        raise SystemExit(f"{variant}: callgrind failed\n{result.stderr[-3000:]}")
    return int(found.group(1))


def child(variant: str, requests: int, against: str | None) -> None:
    """Build `variant`'s app, warm it up, then drive `requests` requests with counting on."""
    home = Path(tempfile.mkdtemp(prefix="dm-instructions-home-"))
    signer, receiver, common = in_process.dev_network(home)
    if variant == FLOOR:
        app = in_process.floor_app(receiver)
    elif variant.startswith("miner at "):
        app = in_process.miner_at(against, [*common, f"cache.directory={home}/then"])
    else:
        app = Miner(compose([*common, f"cache.directory={home}/cache", *in_process.VARIANTS[variant]])).asgi_app()
    warm_up = in_process.batch(signer, receiver, "warm-up", min(WARM_UP, requests))
    counted = in_process.batch(signer, receiver, "counted", requests)
    gc.collect()
    gc.freeze()
    gc.disable()

    async def drive() -> None:
        await in_process.drive_all(app, warm_up)
        toggle("on")
        await in_process.drive_all(app, counted)
        toggle("off")

    uvloop.run(drive())


def toggle(state: str) -> None:
    """Switch callgrind's counting in this process on or off (blocking: nothing else runs meanwhile)."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], stdout=subprocess.DEVNULL, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests counted per variant")
    parser.add_argument("--against", metavar="REV", help="also the default miner as of this git revision")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests, args.against)
        return
    variants = [FLOOR, DEFAULT, NO_CACHE, *([f"miner at {args.against}"] if args.against else [])]
    counts = {variant: count(variant, args.requests, args.against) / args.requests for variant in variants}
    print(f"{'app, in process':34}{'instructions a request':>26}{'vs floor':>10}")
    for variant, instructions in counts.items():
        print(f"{variant:34}{instructions:>26,.0f}{instructions / counts[FLOOR]:>9.2f}x")


if __name__ == "__main__":
    main()
