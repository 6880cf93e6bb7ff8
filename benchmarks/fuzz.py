"""Fuzz the miner's HTTP surface: in process (both protocols, unsigned and validly signed hostile
requests), or with raw bytes through a real uvicorn server on loopback (request lines, headers,
encodings: where the guarded protocol in server/http.py works). Run by hand (the test suite runs a
few hundred cases of the same generators):

    python benchmarks/fuzz.py --cases 100000
    python benchmarks/fuzz.py --cases 100000 --through-server

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
from tests.fuzzing import cases, raw_requests, send_case, send_raw, signed, signed_cases, statuses_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--through-server", action="store_true", help="raw bytes through a real uvicorn server")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="dm-fuzz-")
    os.environ["DECLARATIVE_MINER_HOME"] = home
    wallets = str(dev.dev_wallets_dir(home))
    dev.prepare(home, "dev-miner", "default", wallets, f"{home}/dev/metagraph.yaml", 1)
    # No lifespan runs in process, so no metagraph refresh: let the snapshot never count as stale.
    miner = Miner(compose([f"home={home}", "axon.port=0", "metrics.port=null", "blacklist=open", "axon.request_timeout=2",
                           "network.max_snapshot_age=1e9"]))
    if args.through_server:
        fuzz_through_server(miner, args.cases)
        return
    app, loop = miner.asgi_app(), asyncio.new_event_loop()
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


def fuzz_through_server(miner: Miner, count: int) -> None:
    statuses: collections.Counter = collections.Counter()
    started = time.monotonic()

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw=raw_requests)
    def fuzz(raw):
        answer = send_raw(miner.port, raw)
        codes = statuses_of(answer)
        statuses[codes[0] if codes else "closed"] += 1
        assert all(code < 500 for code in codes), answer[:500]
        if codes and codes[0] >= 400 and not raw.startswith(b"HEAD "):
            assert answer.partition(b"\r\n\r\n")[2], answer[:500]

    with miner:
        try:
            fuzz()
            assert statuses_of(send_raw(miner.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
        finally:
            print(f"{sum(statuses.values()):,} raw cases in {time.monotonic() - started:.0f} s; statuses {dict(statuses)}")
    miner.close()


if __name__ == "__main__":
    main()
