"""What the openai recipe adds to a model server's answers, at several concurrencies, against two
servers: a real `transformers serve` of a random-weight Llama (no download), and a synthetic
OpenAI-compatible server streaming at a real model's pace (benchmarks/paced_openai.py: one token every
`--pace` seconds, nothing computed, so many answers stream at once as on a batching GPU server).

    python benchmarks/openai_server.py                       # ~10 minutes on 2 cores
    python benchmarks/openai_server.py --hidden 32 --layers 2 --concurrency 1,2 --turns 1   # a quick look

The model server runs on core 0 and the miner and this client on the others (`taskset`), as a miner
beside a GPU server would. At each concurrency, by turns, a batch of requests goes straight to the
server with the `openai` client (streamed, as the miner asks it) and a batch goes through the miner's
openai recipe (signed before the clock starts, a raw socket, the miner in a process of its own as
deployed; blacklist, signature, scheduler, cache off, HTTP). Callers start spread over an answer's time
and ask again once answered, as a subnet's validators do. Each request's time to the first chunk of
text and to the end of the answer; what the miner adds is the difference of the medians (and of the
p99s) within a turn, the median over turns.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
from bittensor import http_auth

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.client import STREAM_PATH  # noqa: E402
from declarative_miner.wallet import open_wallet  # noqa: E402
from tests import tiny_model  # noqa: E402

from load import Server, free_port  # noqa: E402  (benchmarks/, beside this script)
from model import PROMPTS, add_model_arguments  # noqa: E402

MODEL_CORE = 0  # the model server's core; the miner and the clients get the others



def pinned(command: list[str]) -> list[str]:
    """`command` on the model server's core, where the machine has another for the miner."""
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        return ["taskset", "-c", str(MODEL_CORE), *command]
    return command


def started(command: list[str], log: Path, health: str) -> subprocess.Popen:
    """`command` running, once `health` answers 200."""
    with open(log, "w") as output:
        server = subprocess.Popen(pinned(command), stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)  # polling a process that is still starting
    server.kill()
    raise SystemExit(f"{command[0]} did not start:\n{log.read_text()[-3000:]}")


def transformers_serve(model: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    """`transformers serve` on the model: (process, its /v1 URL, the model's name)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu"]
    return started(command, log, f"http://127.0.0.1:{port}/health"), f"http://127.0.0.1:{port}/v1", str(model)


def paced_serve(pace: float, tokens: int, log: Path) -> tuple[subprocess.Popen, str, str]:
    """benchmarks/paced_openai.py: (process, its /v1 URL, the model's name)."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("paced_openai.py")), "--port", str(port),
               "--pace", str(pace), "--tokens", str(tokens)]
    return started(command, log, f"http://127.0.0.1:{port}/v1/models"), f"http://127.0.0.1:{port}/v1", "paced"


def direct(client: openai.OpenAI, model: str, text: str, tokens: int) -> tuple[float, float]:
    """(seconds to the first chunk of text, seconds to the end) of a streamed call straight at the server."""
    begun, first = time.perf_counter(), None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                max_tokens=tokens, temperature=0.0, stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - begun
    return first, time.perf_counter() - begun


def through_miner(port: int, signer, receiver: str, text: str) -> tuple[float, float]:
    """(seconds to the first chunk of text, seconds to the end) through the miner, for a request signed
    before the clock starts (signing is the validator's cost, as the direct call's client is the direct's)."""
    body = json.dumps({"roles": ["user"], "messages": [text]}).encode()
    headers = {**http_auth.sign(signer, method="POST", path=STREAM_PATH, body=body, receiver_ss58=receiver),
               "content-type": "application/json", "content-length": str(len(body)), "host": "miner"}
    request = (f"POST {STREAM_PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
               + "\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        begun, first, received = time.perf_counter(), None, b""
        sock.sendall(request)
        while b"event: done" not in received:
            if not (data := sock.recv(65536)):
                raise RuntimeError(f"the miner closed the stream: {received[-500:]!r}")
            received += data
            if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"the miner refused the request: {received[:500]!r}")
            if first is None and b'data: {"chunk"' in received:
                first = time.perf_counter() - begun
    return first, time.perf_counter() - begun


def batch(ask, concurrency: int, count: int, spread: float) -> list[tuple[float, float]]:
    """`count` answers of `ask(text)` from `concurrency` callers, each asking again once answered.
    Caller i first waits i/concurrency of `spread` (an answer's time): arrivals spread as a subnet's
    validators' are, not `concurrency` requests in the same instant, wave after wave."""
    results: list = [None] * count

    def caller(i: int) -> None:
        time.sleep(spread * i / concurrency)  # pacing the load, not synchronising a test
        for n in range(i, count, concurrency):
            results[n] = ask(PROMPTS[n % len(PROMPTS)])

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(caller, range(concurrency)))
    return results


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def compare(name: str, direct_ask, miner_ask, levels: list[int], turns: int, requests: int, spread: float) -> None:
    """Print, per concurrency, both ways' first chunk and whole answer, and what the miner adds."""
    print(f"\n{name}")
    print(f"{'c':>3} {'way':8} {'first p50':>10} {'p99':>8} {'whole p50':>10} {'p99':>8}   (ms)")
    med = statistics.median
    for c in levels:
        count = max(requests, 2 * c)
        turns_of = {"direct": [], "miner": []}
        for turn in range(turns):
            order = (("direct", direct_ask), ("miner", miner_ask))
            for way, ask in order if turn % 2 == 0 else order[::-1]:  # by turns: neither always goes first
                turns_of[way].append(batch(ask, c, count, spread))
        for way, runs in turns_of.items():
            firsts, wholes = [f for run in runs for f, _ in run], [w for run in runs for _, w in run]
            print(f"{c:>3} {way:8} {med(firsts) * 1e3:>10.1f} {p(firsts, 99) * 1e3:>8.1f} "
                  f"{med(wholes) * 1e3:>10.1f} {p(wholes, 99) * 1e3:>8.1f}")
        pairs = list(zip(turns_of["direct"], turns_of["miner"]))
        first_added = med([med([f for f, _ in m]) - med([f for f, _ in d]) for d, m in pairs])
        first_added99 = med([p([f for f, _ in m], 99) - p([f for f, _ in d], 99) for d, m in pairs])
        whole_added = med([med([w for _, w in m]) / med([w for _, w in d]) - 1 for d, m in pairs])
        print(f"{c:>3} first chunk added by the miner: p50 {first_added * 1e3:+.2f} ms, p99 {first_added99 * 1e3:+.2f} ms; "
              f"whole answer added: {whole_added:+.2%} (medians over {turns} turns)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.03, help="the paced server's seconds between tokens")
    parser.add_argument("--servers", default="transformers,paced")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if (os.cpu_count() or 1) > 1:  # the miner (started below) and the clients on the cores the model server is not
        os.sched_setaffinity(0, set(range(os.cpu_count())) - {MODEL_CORE})
    home = Path(tempfile.mkdtemp(prefix="dm-openai-bench-"))
    for kind in args.servers.split(","):
        if kind == "transformers":
            model = tiny_model.build(home / "model", hidden=args.hidden, layers=args.layers, every_byte=False)
            server, base_url, name = transformers_serve(model, home / "serve.log")
            title = f"transformers serve, random Llama {args.hidden} x {args.layers}, {args.tokens} new tokens"
        else:
            server, base_url, name = paced_serve(args.pace, args.tokens, home / "paced.log")
            title = f"paced OpenAI-compatible server, a token each {args.pace * 1e3:.0f} ms, {args.tokens} tokens"
        port = free_port()
        try:
            miner = Server("miner", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null",
                                     f"axon.port={port}", "+recipe=openai", f"prompt.base_url={base_url}",
                                     f"prompt.model={name}", f"prompt.max_tokens={args.tokens}", "cache.ttl=0",
                                     "blacklist=open", f"hydra.run.dir={home / 'run'}"], port, dict(os.environ))
            wallets = str(dev.dev_wallets_dir(str(home)))  # the miner's first start made them
            signer = open_wallet(dev.DEV_VALIDATOR, "default", wallets).hotkey
            receiver = open_wallet("dev-miner", "default", wallets).hotkey.ss58_address
            straight = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                     http_client=httpx.Client(limits=httpx.Limits(max_connections=max(levels))))
            try:
                def direct_ask(text):
                    return direct(straight, name, text, args.tokens)

                def miner_ask(text):
                    return through_miner(port, signer, receiver, text)
                warm = [(direct_ask(text), miner_ask(text))[0] for text in PROMPTS]  # first calls fill caches
                compare(title, direct_ask, miner_ask, levels, args.turns, args.requests,
                        spread=statistics.median(whole for _, whole in warm))
            finally:
                miner.stop()
                straight.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
