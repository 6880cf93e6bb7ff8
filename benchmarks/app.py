"""The miner's ASGI app in process, against the floor's, by variant: where a request's CPU goes. By hand:

    python benchmarks/app.py                 # 400-request batches, 12 rounds: ~15 seconds
    python benchmarks/app.py --profile       # and cProfile's view of the default miner, by cumulative time
    python benchmarks/app.py --against HEAD  # and the default miner as of a git revision, in the same run

No sockets and no server: each request is driven through the app the way uvicorn drives it, so what is
measured is the app alone (verification, policies, cache, scheduler, prompt, reply). Every variant
answers its own pre-signed batches, and the variants take turns, batch by batch, so that all of them
see the same moments of a shared, noisy machine. The collector is off while measuring (its pauses
land on whichever batch is running) and the minimum batch is reported, since noise only adds time.
The loop is uvloop's, as under uvicorn. `--against REV` adds the miner as of that git revision
(benchmarks/revision.py), so old and new code take turns in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from bittensor import http_auth

from declarative_miner.chain import dev
from declarative_miner.config import compose
from declarative_miner.miner import Miner
from declarative_miner.wallet import open_wallet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import revision  # noqa: E402  (benchmarks/revision.py)

# Variant -> overrides of the default miner (each with a cache directory of its own).
VARIANTS = {"miner, default config": [], "miner, cache.ttl=0": ["cache.ttl=0"],
            "miner, blacklist=open": ["blacklist=open"]}


def miner_at(rev: str, overrides: list[str]):
    """The ASGI app of the miner as of git revision `rev`, built from `overrides`."""
    sys.path.insert(0, str(revision.extract(rev)))
    config = importlib.import_module(f"{revision.PACKAGE}.config")
    miner = importlib.import_module(f"{revision.PACKAGE}.miner")
    return miner.Miner(config.compose(overrides)).asgi_app()


def floor_app(hotkey: str):
    """What benchmarks/floor.py serves: verify btauth/1, echo the last message."""
    nonces = http_auth.InMemoryNonceStore(retention=13.0)

    async def app(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        http_auth.verify(headers, body, method="POST", path=scope["path"], self_hotkey_ss58=hotkey, nonce_store=nonces)
        data = json.dumps({"completion": json.loads(body)["messages"][-1]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
    return app


def dev_network(home: Path) -> tuple[Any, str, list[str]]:
    """A dev network in `home`: (the dev validator's hotkey, which signs, the dev miner's ss58, the
    overrides of a miner serving it)."""
    wallets = str(dev.dev_wallets_dir(str(home)))
    dev.prepare(str(home), "dev-miner", "default", wallets, str(home / "dev" / "metagraph.yaml"), 1)
    signer = open_wallet(dev.DEV_VALIDATOR, "default", wallets).hotkey
    receiver = open_wallet("dev-miner", "default", wallets).hotkey.ss58_address
    # The metagraph is never refreshed here: a sync interval longer than the run keeps it fresh.
    return signer, receiver, [f"home={home}", "network.sync_interval=3600", "axon.max_age=3600"]


def batch(signer, receiver: str, tag: str, size: int) -> list[tuple[list, bytes]]:
    """`size` distinct prompts (no duplicates for the cache to refuse), signed now."""
    signed = []
    for i in range(size):
        body = json.dumps({"roles": ["user"], "messages": [f"what is {tag} {i}?"]}).encode()
        headers = {**http_auth.sign(signer, method="POST", path="/Prompting", body=body, receiver_ss58=receiver),
                   "content-type": "application/json", "content-length": str(len(body))}
        signed.append(([(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()], body))
    return signed


async def drive(app, headers: list, body: bytes) -> None:
    """One request through `app`, as an ASGI server sends it; it must be answered 200."""
    sent, delivered = [], False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer is complete

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/Prompting", "raw_path": b"/Prompting", "query_string": b"",
               "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8091)}, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"not served: {sent}")


async def start(app) -> None:
    """Run `app`'s ASGI lifespan start-up (its stores open there), as an ASGI server does first."""
    to_app, from_app = asyncio.Queue(), asyncio.Queue()
    asyncio.get_running_loop().create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                               to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    if (message := await from_app.get())["type"] != "lifespan.startup.complete":
        raise SystemExit(f"not started: {message}")


async def measure(apps: dict, batches: dict, rounds: int) -> dict[str, float]:
    """Minimum µs a request per variant over `rounds` alternated batches (after one warm-up round)."""
    for name, app in apps.items():
        if not name.startswith("floor"):
            await start(app)
    best = {name: float("inf") for name in apps}
    for r in range(rounds + 1):
        for name, app in apps.items():
            started = time.process_time()
            for headers, body in batches[name][r]:
                await drive(app, headers, body)
            if r:
                best[name] = min(best[name], (time.process_time() - started) / len(batches[name][r]) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=400, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--profile", action="store_true", help="then print cProfile's top 40 for the default miner")
    parser.add_argument("--against", metavar="REV", help="also the default miner as of this git revision")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dm-app-bench-"))
    signer, receiver, common = dev_network(home)
    miners = {name: Miner(compose([*common, "metrics.port=null", f"cache.directory={home}/cache{i}", *overrides]))
              for i, (name, overrides) in enumerate(VARIANTS.items())}
    apps = {"floor (verify and echo)": floor_app(receiver), **{name: m.asgi_app() for name, m in miners.items()}}
    if args.against:
        apps[f"miner at {args.against}"] = miner_at(args.against, [*common, f"cache.directory={home}/then"])
    # The floor's batches are signed last: its btauth/1 window is the stock 10 s.
    batches = {name: [batch(signer, receiver, f"{name} {r}", args.batch) for r in range(args.rounds + 1)]
               for name in reversed(apps)}
    gc.collect()
    gc.freeze()  # as Miner.run does before serving
    gc.disable()
    best = uvloop.run(measure(apps, batches, args.rounds))
    gc.enable()
    floor = best["floor (verify and echo)"]
    print(f"{'app, in process':34}{'µs a request (min of ' + str(args.rounds) + ' batches)':>36}{'vs floor':>10}")
    for name, micros in best.items():
        print(f"{name:34}{micros:>36.1f}{micros / floor:>9.2f}x")
    if args.profile:
        default = apps["miner, default config"]
        extra = batch(signer, receiver, "profiled", args.batch)
        profile = cProfile.Profile()
        profile.runcall(uvloop.run, drive_all(default, extra, started=False))
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    for m in miners.values():
        m.close()


async def drive_all(app, requests: list, started: bool = True) -> None:
    """`requests` through `app`, one after another (its lifespan started first, unless it was)."""
    if not started:
        await start(app)
    for headers, body in requests:
        await drive(app, headers, body)


if __name__ == "__main__":
    main()
