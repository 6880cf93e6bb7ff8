"""A validator's latency under floods spread over 20 addresses, each under the shedding limit, and
what bounds it. By hand:

    python benchmarks/floods.py                  # about four minutes
    python benchmarks/floods.py --requests 200 --reps 1

The default miner, with one server process and with two (`axon.workers=2`), each measured by
turns: the validator alone, then under 20 addresses x SPREAD_RATE requests a second of signed
strangers (403) and of forged claims (401). For each it prints the validator's p99 against alone
in the same run, the server's CPU for each refusal, and how many of the machine's cores the
server kept busy: a refusal's CPU times the flood's rate is the load the event loop carries, and a
validator's request waits behind whatever the loop is doing when it arrives. The rest is for the
firewall (deploy/miner.nft); docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402
import serving  # noqa: E402

from declarative_miner.chain import dev  # noqa: E402

VALIDATOR_RATE = 100  # the validator's requests a second: one at a time, as a validator's forward loop sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="the validator's requests per run")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    home, wallets, miner_hotkey, env = serving.dev_home()
    servers = {workers: serving.miner_process(home, env, f"w{workers}", f"axon.workers={workers}")
               for workers in (1, 2)}
    print(f"{'row':<34} {'req/s median (min-max)':<24}  latency ms median (min-max)   server CPU/request")
    try:
        figures = {}
        for workers, server in servers.items():
            def validator(server=server) -> list[load.Job]:  # paced: the run lasts long enough for the flood's steady state
                return [dataclasses.replace(job, pace=1 / VALIDATOR_RATE) for job in serving.jobs(
                    server, "btauth", wallets, dev.DEV_VALIDATOR, miner_hotkey, 1, args.requests, 1)]
            spread = serving.spread_jobs(server, wallets, miner_hotkey, args.requests)
            rows = serving.interleaved(args.reps, {
                "alone": lambda: serving.measure(server, validator()),
                **{kind: (lambda jobs=jobs: serving.measure(server, jobs + validator(), focus=len(jobs)))
                   for kind, jobs in spread.items()}})
            for kind, row in rows.items():
                serving.show(f"validator, {kind}, workers={workers}", row)
            figures[workers] = rows
    finally:
        for server in servers.values():
            server.stop()
    print("\nfigures (ratios from this run)")
    for workers, rows in figures.items():
        for kind in ("stranger", "forged"):
            row = rows[kind]
            busy = row["cpu_ms"][0] * row["rps"][0] / 1000
            print(f"  workers={workers} {kind:<8}  validator p99 vs alone {serving.paired(row, rows['alone'], 'p99')}"
                  f"   (target <= 2)   server CPU a request {row['cpu_ms'][0]:.2f} ms   cores busy {busy:.2f}")


if __name__ == "__main__":
    main()
