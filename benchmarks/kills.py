"""Workers killed under load, the OOM killer's way: how long service is interrupted. By hand:

    python benchmarks/kills.py               # 300 kills, ~3 minutes
    python benchmarks/kills.py --kills 20    # a quick look

A miner with `axon.workers=2` (gunicorn supervising) serves 4 keep-alive validators, each sending
signed prompts one after another. At random moments a random worker gets SIGKILL. For each kill it
reports how long until the replacement said it serves; over the run, the longest time no request at
all was answered 200 (the service's longest gap), the requests lost (those on the killed worker), and
whether every validator's next request after each replacement was answered.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from declarative_miner.chain import dev
from declarative_miner.client import MinerClient
from declarative_miner.wallet import open_wallet

SERVING = re.compile(r"on http://127\.0\.0\.1:(\d+) .*process (\d+)")


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


class Miner:
    """`python -m declarative_miner axon.workers=2` with its log read on a thread."""

    def __init__(self, home: Path):
        env = {**os.environ, "DECLARATIVE_MINER_HOME": str(home)}
        self.process = subprocess.Popen([sys.executable, "-m", "declarative_miner", "axon.port=0", "axon.workers=2",
                                         "cache.ttl=0", "metrics.port=null"], env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.serving: dict[int, float] = {}  # worker pid -> when it said it serves
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        while len(self.serving) < 2:
            if self.process.poll() is not None:
                raise SystemExit("the miner did not start")
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.process.stdout:
            if match := SERVING.search(line):
                self.port = int(match.group(1))
                self.serving[int(match.group(2))] = time.monotonic()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="dm-kills-"))
    dev.prepare(str(home), "dev-miner", "default", str(dev.dev_wallets_dir(str(home))),
                str(home / "dev" / "metagraph.yaml"), 1)
    validator = open_wallet(dev.DEV_VALIDATOR, "default", str(dev.dev_wallets_dir(str(home)))).hotkey
    miner = Miner(home)
    answered: list[tuple[float, int, int]] = []  # (when, client, status)
    lost, stop, lock = [0], threading.Event(), threading.Lock()

    def validator_loop(n: int) -> None:
        client, i = MinerClient(validator, port=miner.port, timeout=30), 0
        while not stop.is_set():
            i += 1
            try:
                status = client.prompt([f"{n} {i}"]).status
                with lock:
                    answered.append((time.monotonic(), n, status))
            except httpx.HTTPError:
                with lock:
                    lost[0] += 1
        client.close()

    threads = [threading.Thread(target=validator_loop, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    replaced, next_served = [], []
    try:
        for _ in range(args.kills):
            time.sleep(rng.uniform(0.05, 0.3))  # a random moment under load
            victim, killed_at = rng.choice(children(miner.process.pid)), time.monotonic()
            os.kill(victim, signal.SIGKILL)
            while not [pid for pid, at in miner.serving.items() if at > killed_at]:
                time.sleep(0.002)
            ready = max(miner.serving.values())
            replaced.append(ready - killed_at)
            while True:  # every validator's first answer once the replacement serves
                with lock:
                    after = [(n, status) for when, n, status in answered if when > ready]
                if {n for n, _ in after} == {0, 1, 2, 3}:
                    break
                time.sleep(0.002)
            next_served.append(all(status == 200 for n, status in {n: s for n, s in reversed(after)}.items()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        miner.stop()
    times = sorted(when for when, _, status in answered if status == 200)
    gap = max(b - a for a, b in zip(times, times[1:]))
    print(f"kills                              {args.kills}")
    print(f"requests answered 200              {sum(1 for *_, s in answered if s == 200)}")
    print(f"requests lost (on a killed worker) {lost[0]}")
    print(f"kill -> replacement serves, ms     median {statistics.median(replaced) * 1000:.0f}, "
          f"max {max(replaced) * 1000:.0f}")
    print(f"longest gap with no answer, ms     {gap * 1000:.0f}")
    print(f"next request after each served     {sum(next_served)}/{len(next_served)}")


if __name__ == "__main__":
    main()
