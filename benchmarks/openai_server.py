"""The openai recipe's cost over calling the model server directly (target: <= 5% of a request's
time, and the first chunk <= 5 ms later). By hand:

    python benchmarks/openai_server.py                      # a ~30 M-parameter random Llama (8 x 512)
    python benchmarks/openai_server.py --hidden 32 --layers 2 --requests 6   # the tests' tiny model

Builds a random-weight Llama (no download), serves it with a real `transformers serve` on
loopback, and alternates, one request at a time, the two ways of asking it the same prompts: the
`openai` client straight at the server, and a signed request through the miner's openai recipe
(blacklist, signature, cache off, scheduler, the same `openai` client inside, HTTP). Greedy
decoding, so both get the same tokens. Streaming: time to the first chunk each way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.client import MinerClient  # noqa: E402
from declarative_miner.config import compose  # noqa: E402
from declarative_miner.miner import Miner  # noqa: E402
from declarative_miner.wallet import open_wallet  # noqa: E402
from tests import tiny_model  # noqa: E402

from load import free_port  # noqa: E402  (benchmarks/, beside this script)
from model import PROMPTS, add_model_arguments, through_miner  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dm-openai-bench-"))
    model = tiny_model.build(home / "model", hidden=args.hidden, layers=args.layers, every_byte=False)
    server, base_url = serve(model, home / "serve.log")
    try:
        miner = Miner(compose([f"home={home}", "axon.port=0", "+recipe=openai", f"prompt.base_url={base_url}",
                               f"prompt.model={model}", f"prompt.max_tokens={args.tokens}", "cache.ttl=0",
                               "blacklist=open"]))
        straight = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        with miner:
            signer = open_wallet(dev.DEV_VALIDATOR, "default", str(home / "dev" / "wallets")).hotkey
            client = MinerClient(signer, "127.0.0.1", miner.port, receiver=miner.hotkey)
            for text in PROMPTS:  # warm-up: first calls allocate and fill caches
                direct(straight, str(model), text, args.tokens, "plain"), through_miner(client, text, False)
            whole, streamed, served, first_direct, first_served = [], [], [], [], []
            for i in range(args.requests):
                text = PROMPTS[i % len(PROMPTS)]
                whole.append(direct(straight, str(model), text, args.tokens, "plain"))
                streamed.append(direct(straight, str(model), text, args.tokens, "streamed"))
                served.append(through_miner(client, text, stream=False))
                first_direct.append(direct(straight, str(model), text, args.tokens, "first"))
                first_served.append(through_miner(client, text, stream=True))
            client.close()
        miner.close()
        straight.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    med = statistics.median
    print(f"model: random Llama {args.hidden} x {args.layers} behind transformers serve, {args.tokens} new tokens, "
          f"{args.requests} requests of each kind")
    print(f"{'':34}{'median':>10}{'min':>10}{'max':>10}")
    for name, values in (("server directly, whole answer", whole), ("server directly, streamed whole", streamed),
                         ("through the miner, whole answer", served),
                         ("server directly, first chunk", first_direct),
                         ("through the miner, first chunk", first_served)):
        print(f"{name:34}{med(values) * 1e3:>8.1f}ms{min(values) * 1e3:>8.1f}ms{max(values) * 1e3:>8.1f}ms")
    # Each request through the miner is paired with the direct calls just before it: neighbours in
    # time see the same load on a shared machine, so the median of paired ratios is the steadier figure.
    # The miner streams from the server (to pass chunks on as they come), so the like-for-like
    # baseline is the direct call streamed to its end; the plain one is shown too.
    for baseline, values in (("streamed", streamed), ("plain", whole)):
        paired = med([s / d for s, d in zip(served, values)]) - 1
        print(f"overhead of the miner over the server {baseline}: {paired:+.1%} (median of paired ratios; "
              f"{(med(served) - med(values)) * 1e3:+.1f} ms per request; target <= 5%)")
    print(f"first chunk: {(med(first_served) - med(first_direct)) * 1e3:+.1f} ms later through the miner "
          f"({med(first_served) * 1e3:.1f} vs {med(first_direct) * 1e3:.1f} ms; target <= 5 ms)")


if __name__ == "__main__":
    main()
