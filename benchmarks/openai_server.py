"""The openai recipe's cost over calling the model server directly (target: <= 5% of a request's
time, and the first chunk <= 5 ms later). By hand:

    python benchmarks/openai_server.py                      # a ~30 M-parameter random Llama (8 x 512)
    python benchmarks/openai_server.py --hidden 32 --layers 2 --requests 6   # the tests' tiny model

Builds a random-weight Llama (no download), serves it with a real `transformers serve` on
loopback, and alternates, one request at a time, the two ways of asking it the same prompts: the
`openai` client straight at the server, and a signed request through the miner's openai recipe
(blacklist, signature, cache off, scheduler, the same `openai` client inside, HTTP), the miner in
a process of its own as deployed. Greedy decoding, so both get the same tokens. Streaming: time
to the first chunk each way; the miner's request is signed before its clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
from bittensor import http_auth

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.client import STREAM_PATH, MinerClient  # noqa: E402
from declarative_miner.wallet import open_wallet  # noqa: E402
from tests import tiny_model  # noqa: E402

from load import Server, free_port  # noqa: E402  (benchmarks/, beside this script)
from model import PROMPTS, add_model_arguments, print_timings, through_miner  # noqa: E402

def serve(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`transformers serve` on the model, once it answers; (process, its /v1 URL)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu"]
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.2)  # polling a process that is still starting
    server.kill()
    raise SystemExit(f"transformers serve did not start:\n{log.read_text()[-3000:]}")


def direct(client: openai.OpenAI, model: str, text: str, tokens: int, how: str) -> float:
    """Seconds to the answer asked `how`: "plain" (one JSON answer), "streamed" (every chunk, as
    the miner asks the server), or "first" (the first chunk of text)."""
    started = time.perf_counter()
    messages = [{"role": "user", "content": text}]
    if how == "plain":
        client.chat.completions.create(model=model, messages=messages, max_tokens=tokens, temperature=0.0)
        return time.perf_counter() - started
    first = None
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=tokens,
                                                temperature=0.0, stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    # Read to the end even for "first": an abandoned stream keeps the server generating, and the
    # next request would wait for it.
    return first if how == "first" else time.perf_counter() - started


def first_through_miner(port: int, signer, receiver: str, text: str) -> float:
    """Seconds to the first chunk of text through the miner, for a request signed before the clock
    starts (signing is the validator's cost, as the direct call's client costs are the direct's)."""
    body = json.dumps({"roles": ["user"], "messages": [text]}).encode()
    headers = {**http_auth.sign(signer, method="POST", path=STREAM_PATH, body=body, receiver_ss58=receiver),
               "content-type": "application/json", "content-length": str(len(body)), "host": "miner"}
    request = (f"POST {STREAM_PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
               + "\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started, first, received = time.perf_counter(), None, b""
        sock.sendall(request)
        while b"event: done" not in received:  # read to the end, as the direct call does
            if not (data := sock.recv(65536)):
                raise RuntimeError(f"the miner closed the stream: {received[-500:]!r}")
            received += data
            if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"the miner refused the request: {received[:500]!r}")
            if first is None and b'data: {"chunk"' in received:
                first = time.perf_counter() - started
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dm-openai-bench-"))
    model = tiny_model.build(home / "model", hidden=args.hidden, layers=args.layers, every_byte=False)
    server, base_url = serve(model, home / "serve.log")
    port = free_port()
    try:
        # The miner in a process of its own, as it is deployed: sharing this one's interpreter lock
        # with the clients below would add its waits to the miner's figures.
        miner = Server("miner", [sys.executable, "-m", "declarative_miner", f"home={home}", "metrics.port=null", f"axon.port={port}",
                                 "+recipe=openai", f"prompt.base_url={base_url}", f"prompt.model={model}",
                                 f"prompt.max_tokens={args.tokens}", "cache.ttl=0", "blacklist=open",
                                 f"hydra.run.dir={home / 'run'}"], port, dict(os.environ))
        straight = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        try:
            wallets = str(dev.dev_wallets_dir(str(home)))
            signer = open_wallet(dev.DEV_VALIDATOR, "default", wallets).hotkey
            receiver = open_wallet("dev-miner", "default", wallets).hotkey.ss58_address
            client = MinerClient(signer, "127.0.0.1", port, receiver=receiver)
            for text in PROMPTS:  # warm-up: first calls allocate and fill caches
                direct(straight, str(model), text, args.tokens, "plain"), through_miner(client, text, False)
            whole, streamed, served, first_direct, first_served = [], [], [], [], []
            for i in range(args.requests):
                text = PROMPTS[i % len(PROMPTS)]
                whole.append(direct(straight, str(model), text, args.tokens, "plain"))
                streamed.append(direct(straight, str(model), text, args.tokens, "streamed"))
                served.append(through_miner(client, text, stream=False))
                first_direct.append(direct(straight, str(model), text, args.tokens, "first"))
                first_served.append(first_through_miner(port, signer, receiver, text))
            client.close()
        finally:
            miner.stop()
            straight.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    med = statistics.median
    print(f"model: random Llama {args.hidden} x {args.layers} behind transformers serve, {args.tokens} new tokens, "
          f"{args.requests} requests of each kind")
    print_timings((("server directly, whole answer", whole), ("server directly, streamed whole", streamed),
                   ("through the miner, whole answer", served), ("server directly, first chunk", first_direct),
                   ("through the miner, first chunk", first_served)))
    # Each request through the miner is paired with the direct calls just before it: neighbours in
    # time see the same load on a shared machine, so the median of paired ratios is the steadier figure.
    # The miner streams from the server (to pass chunks on as they come), so the like-for-like
    # baseline is the direct call streamed to its end; the plain one is shown too.
    for baseline, values in (("streamed", streamed), ("plain", whole)):
        paired = med([s / d for s, d in zip(served, values)]) - 1
        print(f"overhead of the miner over the server {baseline}: {paired:+.1%} (median of paired ratios; "
              f"{(med(served) - med(values)) * 1e3:+.1f} ms per request; target <= 5%)")
    later = med([s - d for s, d in zip(first_served, first_direct)])
    print(f"first chunk: {later * 1e3:+.1f} ms later through the miner (median of paired differences; medians "
          f"{med(first_served) * 1e3:.1f} vs {med(first_direct) * 1e3:.1f} ms; target <= 5 ms)")


if __name__ == "__main__":
    main()
