"""Fuzz the miner's HTTP surface in process: both protocols, unsigned and validly signed hostile
requests. Run by hand (the test suite runs a few hundred cases of the same generators):

    python benchmarks/fuzz.py --cases 100000

Reports cases run and the first failure: a 5xx the prompt did not cause, a refusal without a
reason, an exception, or a request that took over 30 s. Exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.config import compose  # noqa: E402
from declarative_miner.miner import Miner  # noqa: E402
from declarative_miner.wallet import open_wallet  # noqa: E402
from tests.fuzzing import cases, send_case, signed, signed_cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="dm-fuzz-")
    os.environ["DECLARATIVE_MINER_HOME"] = home
    wallets = str(dev.dev_wallets_dir(home))
    dev.prepare(home, "dev-miner", "default", wallets, f"{home}/dev/metagraph.yaml", 1)
    # No lifespan runs in process, so no metagraph refresh: let the snapshot never count as stale.
    miner = Miner(compose([f"home={home}", "blacklist=open", "axon.request_timeout=2",
                           "network.max_snapshot_age=1e9"]))
    app, loop = miner._make_app(), asyncio.new_event_loop()
    caller = open_wallet(dev.DEV_VALIDATOR, "default", wallets).hotkey
    statuses: collections.Counter = collections.Counter()
    started = time.monotonic()

    @settings(max_examples=args.cases, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(cases, signed_cases.map(lambda c: signed(c[0], c[1], caller, miner.hotkey))))
    def fuzz(case):
        status, body = loop.run_until_complete(send_case(app, case))
        statuses[status] += 1
        assert status < 500, (status, body)
        assert status == 200 or (body and (body.get("reason") or body.get("message"))), (status, body)

    try:
        fuzz()
    finally:
        print(f"{sum(statuses.values()):,} cases in {time.monotonic() - started:.0f} s; statuses {dict(statuses)}")
        loop.close()
        miner.close()


if __name__ == "__main__":
    main()
