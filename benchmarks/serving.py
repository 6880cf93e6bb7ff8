"""The miner against the bare-ASGI floor and a stock bittensor 10 Axon, side by side. By hand:

    python benchmarks/serving.py                 # full run (a few minutes), prints one table
    python benchmarks/serving.py --requests 200 --reps 1 --concurrency 1,8   # quicker
    python benchmarks/serving.py --against 4f865a9   # and the miner as of that revision, in the btauth/1 rows

Every server runs on loopback in its own process and is driven by the same load generator
(benchmarks/load.py) in the same run. The rows a target compares run by turns (a, b, a, b...), and
its ratio is the median of the turns' ratios: a burst of load from the machine's other tenants then
falls on both sides of it. Server CPU per request comes from /proc (robust on a noisy
shared machine), RSS from /proc too. The stock Axon needs a bittensor 10.5.0 venv: --v10-python,
or the test suite's cached one; without it those rows are skipped.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402
import revision  # noqa: E402

from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.wallet import create_wallet, open_wallet  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_V10 = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "declarative-miner-tests" / "bt-10.5.0" / "bin" / "python"


def jobs(server: load.Server, protocol: str, wallets: str, wallet: str, receiver: str, concurrency: int,
         total: int, processes: int) -> list[load.Job]:
    processes = min(processes, concurrency)
    return [load.Job(server.port, protocol, wallets, wallet, receiver, concurrency // processes + (i < concurrency % processes),
                     max(1, total // concurrency)) for i in range(processes)]


def measure(server: load.Server, job_list: list[load.Job], focus: int = 0) -> dict:
    """One run; latencies are those of job `focus` and the ones after it (flood jobs go first)."""
    before = server.cpu()
    per_job, wall, generator_cpu = load.run(job_list, background=focus)
    used = server.cpu() - before
    every = [r for results in per_job for r in results]
    mine = sorted(lat for results in per_job[focus:] for lat, _ in results)
    return {"rps": len(every) / wall, "p50": mine[len(mine) // 2] * 1e3, "p99": mine[int(len(mine) * 0.99) - 1 if len(mine) > 1 else 0] * 1e3,
            "cpu_ms": used * 1e3 / len(every), "gen_ms": generator_cpu * 1e3 / len(every),
            "statuses": dict(collections.Counter(s for _, s in every)), "rss": server.rss_mb()}


def summary(runs: list[dict]) -> dict:
    """Median, min and max of each figure over `runs`, which are kept under "runs"."""
    out = {k: (statistics.median(r[k] for r in runs), min(r[k] for r in runs), max(r[k] for r in runs))
           for k in ("rps", "p50", "p99", "cpu_ms", "gen_ms", "rss")}
    out["statuses"], out["runs"] = runs[-1]["statuses"], runs
    return out


def repeat(reps: int, run) -> dict:
    return summary([run() for _ in range(reps)])


def interleaved(reps: int, runs: dict) -> dict[str, dict]:
    """`reps` runs of each of `runs` (name: run), taking turns: a, b, a, b... A burst of load from the
    machine's other tenants, which can last longer than a whole row, then lands on both sides of a
    ratio instead of one (`paired` compares turn by turn)."""
    done: dict[str, list] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            done[name].append(run())
    return {name: summary(each) for name, each in done.items()}


def paired(numerator: dict, denominator: dict, key: str = "cpu_ms", fmt: str = "6.2f") -> str:
    """The median over turns of numerator/denominator, for two rows of one `interleaved` call."""
    pairs = list(zip(numerator["runs"], denominator["runs"]))
    if any(b[key] <= 0 for _, b in pairs):
        return ratio(1.0, 0.0)
    return f"{statistics.median(a[key] / b[key] for a, b in pairs):{fmt}}x"


def show(label: str, row: dict) -> None:
    def cell(key: str, fmt: str) -> str:
        median, low, high = row[key]
        return f"{median:{fmt}} ({low:{fmt}}-{high:{fmt}})"
    print(f"{label:<34} {cell('rps', '7.0f')}  p50 {cell('p50', '6.2f')}  p99 {cell('p99', '6.2f')}  "
          f"cpu {cell('cpu_ms', '5.2f')} ms  rss {row['rss'][0]:5.0f} MB  gen {row['gen_ms'][0]:4.2f} ms  {row['statuses']}")


ATTACKER = "127.0.0.2"  # loopback is a /8: another source address than the validator's
SPREAD = [f"127.0.0.{3 + i}" for i in range(20)]  # 20 other hosts, each flooding under the shedding limit
SPREAD_RATE = 95  # requests a second from each: under axon.max_refusals_per_ip (100)


def dev_home() -> tuple[Path, str, str, dict]:
    """A dev network in a new home, with the wallets the rows use: (home, wallets directory, the
    miner's hotkey, the environment a server process runs in)."""
    home = Path(tempfile.mkdtemp(prefix="dm-bench-"))
    wallets = str(dev.dev_wallets_dir(str(home)))
    dev.prepare(str(home), "dev-miner", "default", wallets, str(home / "dev" / "metagraph.yaml"), 1)
    for name in ["stranger"] + [f"flood-{i}" for i in range(20)]:
        create_wallet(name, "default", wallets)
    miner_hotkey = open_wallet("dev-miner", "default", wallets).hotkey.ss58_address
    return home, wallets, miner_hotkey, {**os.environ, "DECLARATIVE_MINER_HOME": str(home)}


def miner_process(home: Path, env: dict, name: str, *overrides: str) -> load.Server:
    """The default miner (it sheds) with `overrides`, on a free port, its cache and run folder its own.
    btauth/1's 10 s window is widened: the generator signs its requests before the run."""
    port = load.free_port()
    return load.Server(name, [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null",
                              f"axon.port={port}", "axon.max_age=120", f"cache.directory={home}/cache-{name}",
                              f"hydra.run.dir={home}/run-{name}", *overrides], port, env)


def spread_jobs(server: load.Server, wallets: str, miner_hotkey: str, requests: int) -> dict[str, list[load.Job]]:
    """Floods spread over 20 addresses, each under the shedding limit: one connection an address,
    paced to SPREAD_RATE requests a second, so no address is ever shed. "stranger": 20 unregistered
    hotkeys (403); "forged": the validator's hotkey signed with zeros (401)."""
    return {kind: [load.Job(server.port, "btauth", wallets, wallet, miner_hotkey, 10, requests,
                            source=",".join(SPREAD[p::2]), forge=kind == "forged", pace=1 / SPREAD_RATE)
                   for p in range(2)]
            for kind, wallet in (("stranger", ",".join(f"flood-{i}" for i in range(20))),
                                 ("forged", dev.DEV_VALIDATOR))}


def held_connections(server: load.Server, run, each: int = 200) -> dict:
    """`run()` while another address holds `each` idle, slowloris and unread-body connections."""
    held = []
    for kind in range(3):
        for _ in range(each):
            sock = socket.socket()
            sock.bind((ATTACKER, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", server.port))
                if kind == 1:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # a slowloris: headers never end
                elif kind == 2:
                    sock.sendall(b"GET /health HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nx")
            except OSError:
                pass  # refused or reset: the bound per address at work
            held.append(sock)
    try:
        return run()
    finally:
        for sock in held:
            sock.close()


def ratio(numerator: float, denominator: float, fmt: str = "6.2f") -> str:
    """`numerator / denominator` for the targets table; CPU time is read in 10 ms ticks, so a short
    run can measure 0 for the baseline: then there is no ratio to print, not a crash."""
    if denominator <= 0:
        return f"{'n/a':>6} (baseline measured 0: run more requests)"
    return f"{numerator / denominator:{fmt}}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500, help="requests per run (the stock Axon gets a fifth)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--v10-python", type=Path, default=DEFAULT_V10)
    parser.add_argument("--against", metavar="REV", help="also the miner as of this git revision, in the btauth/1 rows")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    home, wallets, miner_hotkey, env = dev_home()
    print(f"{'row':<34} {'req/s median (min-max)':<24}  latency ms median (min-max)   server CPU/request")

    ports = {name: load.free_port() for name in ("miner", "uncached", "memory", "floor", "floor h11", "axon", "workers",
                                                 "then")}
    # btauth/1's 10 s window is widened for both btauth servers alike: requests are pre-signed.
    # This miner never sheds a flooding address, so the cost of each refusal can be measured;
    # `shedding` is the default miner, which does.
    miner = load.Server("miner", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null", f"axon.port={ports['miner']}",
                             "axon.max_age=120", "axon.max_refusals_per_ip=0", "hydra.run.dir=" + str(home / "run")],
                   ports["miner"], env)
    shedding = miner_process(home, env, "shedding")
    uncached = load.Server("uncached", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null", "cache.ttl=0",
                                   f"axon.port={ports['uncached']}", "axon.max_age=120",
                                   "hydra.run.dir=" + str(home / "run2")], ports["uncached"], env)
    # The same miner with its state in memory: what the default disk store (SQLite) costs a request.
    memory = load.Server("memory", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null",
                                    "state.store=memory", f"axon.port={ports['memory']}", "axon.max_age=120",
                                    "axon.max_refusals_per_ip=0", "hydra.run.dir=" + str(home / "run4")],
                         ports["memory"], env)
    workers = load.Server("workers", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null", "axon.workers=2",
                                 f"axon.port={ports['workers']}", "axon.max_age=120", "cache.directory=${home}/cache2",
                                 "hydra.run.dir=" + str(home / "run3")], ports["workers"], env)
    floor = load.Server("floor", [sys.executable, str(HERE / "floor.py"), "--port", str(ports["floor"]), "--hotkey",
                             miner_hotkey], ports["floor"], env)
    # The same floor on the miner's HTTP parser (h11, pure Python; the floor's default is httptools, in C).
    floor_h11 = load.Server("floor h11", [sys.executable, str(HERE / "floor.py"), "--port", str(ports["floor h11"]),
                                          "--hotkey", miner_hotkey, "--http", "h11"], ports["floor h11"], env)
    compared = [("floor", floor), ("miner", miner)]
    if args.against:  # the same miner as of another revision (benchmarks/revision.py), for a before/after
        root = str(revision.extract(args.against))
        compared.append((f"miner at {args.against}", load.Server(
            "then", [sys.executable, "-m", revision.PACKAGE, f"home={home}", f"axon.port={ports['then']}",
                     "axon.max_age=120", "axon.max_refusals_per_ip=0", "cache.directory=${home}/cache5",
                     "hydra.run.dir=" + str(home / "run5")], ports["then"],
            {**env, "PYTHONPATH": os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))})))
    results = {}

    def once(server: load.Server, protocol: str, c: int, pace: float = 0.0, who: str = dev.DEV_VALIDATOR):
        """A run of `who`'s load at concurrency `c` (paced: see load.Job), as a callable."""
        return lambda: measure(server, [dataclasses.replace(job, pace=pace) for job in jobs(
            server, protocol, wallets, who, miner_hotkey, c, args.requests, args.processes)])

    def side_by_side(rows: dict) -> None:
        """Runs `rows` (key: (label, run)) by turns, keeps them in `results`, shows each under its label."""
        for key, row in interleaved(args.reps, {key: run for key, (_, run) in rows.items()}).items():
            results[key] = row
            show(rows[key][0], row)

    btauth_servers = [(name, name, server) for name, server in compared] + [
        ("uncached", "miner cache.ttl=0", uncached), ("floor h11", "floor on h11", floor_h11)]
    try:
        for c in levels:
            side_by_side({(name, "btauth", c): (f"{label} btauth/1 c={c}", once(server, "btauth", c))
                          for name, label, server in btauth_servers})
            # The closed loop gives a faster server more requests a second, and each costs it less
            # (docs/performance.md): the floor again, held to the miner's rate.
            pace = c / results[("miner", "btauth", c)]["rps"][0]
            row = results[("paced floor", "btauth", c)] = repeat(args.reps, once(floor, "btauth", c, pace))
            show(f"floor at the miner's req/s c={c}", row)
        c = max(levels)
        side_by_side({("one worker", c): (f"miner one worker btauth/1 c={c}", once(miner, "btauth", c)),
                      ("two workers", c): (f"miner two workers btauth/1 c={c}", once(workers, "btauth", c))})
        for c in levels:  # the floor checks a v10 request as a v10 Axon does (floor.py): the legacy floor
            side_by_side({("floor", "v10", c): (f"floor v10 c={c}", once(floor, "v10", c)),
                          ("miner", "v10", c): (f"miner v10 route c={c}", once(miner, "v10", c)),
                          ("memory", "v10", c): (f"miner state.store=memory v10 c={c}", once(memory, "v10", c))})
        c = max(levels)
        side_by_side({("reject", c): (f"miner blacklisted c={c}", once(miner, "btauth", c, who="stranger")),
                      ("served", c): (f"miner served c={c}", once(miner, "btauth", c))})
        floods = {}
        for name, server in (("never sheds", miner), ("sheds (default)", shedding)):
            def validator(server=server) -> list[load.Job]:  # new prompts each run: a repeat would be a 409
                return jobs(server, "btauth", wallets, dev.DEV_VALIDATOR, miner_hotkey, 1, args.requests // 5, 1)
            # 20 unregistered hotkeys on another host, 10 connections in each of two generator processes,
            # with more requests than the validator's run lasts for: the flood is stopped when it ends.
            flood = [load.Job(server.port, "btauth", wallets, ",".join(f"flood-{i}" for i in range(p, 20, 2)),
                              miner_hotkey, 10, args.requests, source=ATTACKER) for p in range(2)]
            # 20 connections from another address claiming the validator's hotkey, signed with zeros.
            forged = [load.Job(server.port, "btauth", wallets, dev.DEV_VALIDATOR, miner_hotkey, 10,
                               args.requests, source=ATTACKER, forge=True) for _ in range(2)]
            spread = spread_jobs(server, wallets, miner_hotkey, args.requests)
            rows = interleaved(args.reps, {
                "alone": lambda: measure(server, validator()),
                "flooded": lambda: measure(server, flood + validator(), focus=len(flood)),
                "forged": lambda: measure(server, forged + validator(), focus=len(forged)),
                "spread stranger": lambda: measure(server, spread["stranger"] + validator(), focus=2),
                "spread forged": lambda: measure(server, spread["forged"] + validator(), focus=2)})
            show(f"validator alone c=1, {name}", rows["alone"])
            show(f"validator under 20-caller flood, {name}", rows["flooded"])
            show(f"validator under forged claims, {name}", rows["forged"])
            show(f"validator under strangers from 20 addresses, {name}", rows["spread stranger"])
            show(f"validator under forged claims from 20 addresses, {name}", rows["spread forged"])
            floods[name] = rows
        held = repeat(args.reps, lambda: held_connections(miner, lambda: measure(
            miner, jobs(miner, "btauth", wallets, dev.DEV_VALIDATOR, miner_hotkey, 1, args.requests // 5, 1))))
        show("validator, 600 held connections", held)
        cost = {}
        for label, protocol, forge, size in (("served btauth/1 1 KB", "btauth", False, 1000),
                                             ("forged btauth/1 1 MB", "btauth", True, 1_000_000),
                                             ("forged v10 1 MB", "v10", True, 1_000_000)):
            count = args.requests // 4 if size < 10_000 else max(4, args.requests // 40)
            cost[label] = repeat(args.reps, lambda: measure(miner, [load.Job(
                miner.port, protocol, wallets, dev.DEV_VALIDATOR, miner_hotkey, 4, max(1, count // 4),
                source=ATTACKER if forge else "127.0.0.1", forge=forge, size=size)]))
            show(label, cost[label])
        rss = miner.rss_mb()
    finally:
        for server in (uncached, memory, workers, shedding, floor_h11, *(server for _, server in compared)):
            server.stop()

    axon_rows = {}
    if args.v10_python.exists():
        axon = load.Server("axon", [str(args.v10_python), str(HERE / "v10_axon.py"), "--port", str(ports["axon"]),
                               "--wallets", wallets, "--wallet", "dev-miner"], ports["axon"], env)
        try:
            for c in levels:
                axon_rows[c] = repeat(args.reps, lambda: measure(axon, jobs(axon, "v10", wallets, dev.DEV_VALIDATOR,
                                                                            miner_hotkey, c, args.requests // 5,
                                                                            args.processes)))
                show(f"stock v10 Axon c={c}", axon_rows[c])
        finally:
            axon.stop()
    else:
        print(f"(no bittensor 10 venv at {args.v10_python}: stock Axon rows skipped)")

    print("\nratios from this run (targets: docs/performance.md)")
    for c in levels:
        print(f"  c={c:<3} miner CPU/request vs floor          "
              f"{paired(results[('miner', 'btauth', c)], results[('floor', 'btauth', c)])}")
        print(f"  c={c:<3}   vs the floor on h11                "
              f"{paired(results[('miner', 'btauth', c)], results[('floor h11', 'btauth', c)])}")
        paced_cpu = results[("paced floor", "btauth", c)]["cpu_ms"][0]
        print(f"  c={c:<3}   vs the floor at the miner's req/s  "
              f"{ratio(results[('miner', 'btauth', c)]['cpu_ms'][0], paced_cpu)}")
        print(f"  c={c:<3}   the same with cache.ttl=0          "
              f"{paired(results[('uncached', 'btauth', c)], results[('floor', 'btauth', c)])}")
        for name, _ in compared[2:]:
            print(f"  c={c:<3}   {name:<34} {paired(results[(name, 'btauth', c)], results[('floor', 'btauth', c)])}")
    c = max(levels)
    print(f"  c={c:<3} two workers' req/s vs one's            "
          f"{paired(results[('two workers', c)], results[('one worker', c)], 'rps')}")
    for c in levels:
        print(f"  c={c:<3} miner v10 CPU/request vs v10 floor  "
              f"{paired(results[('miner', 'v10', c)], results[('floor', 'v10', c)])}")
    for c, row in axon_rows.items():
        print(f"  c={c:<3} miner v10 req/s vs stock Axon       "
              f"{ratio(results[('miner', 'v10', c)]['rps'][0], row['rps'][0], '6.1f')}   (target >= 10)")
        print(f"  c={c:<3}   with state.store=memory            "
              f"{ratio(results[('memory', 'v10', c)]['rps'][0], row['rps'][0], '6.1f')}")
    print(f"  blacklisted vs served CPU/request         "
          f"{paired(results[('reject', max(levels))], results[('served', max(levels))])}"
          "   (target <= 0.3)")
    for name, rows in floods.items():
        for kind, what in (("flooded", "flood"), ("forged", "forged claims"), ("spread stranger", "20-address strangers"),
                           ("spread forged", "20-address forged")):
            print(f"  validator p99 under {what} vs alone, {name:<16} {paired(rows[kind], rows['alone'], 'p99')}   "
                  "(target <= 2)")
    print(f"  validator 503s under 600 held connections {held['statuses'].get(503, 0):6d}    (target 0)")
    served_1k = cost["served btauth/1 1 KB"]["cpu_ms"][0]
    for label in ("forged btauth/1 1 MB", "forged v10 1 MB"):
        print(f"  {label} CPU vs served 1 KB  {ratio(cost[label]['cpu_ms'][0], served_1k)}   (target <= 0.5)")
    print(f"  echo miner RSS                            {rss:6.0f} MB  (target <= 150)")

if __name__ == "__main__":
    main()
