"""The llama recipe's cost over calling `generate` by hand on the same model (target: <= 5%),
and how soon a streamed answer's first chunk arrives. By hand:

    python benchmarks/model.py                      # a ~30 M-parameter random Llama (8 x 512)
    python benchmarks/model.py --hidden 32 --layers 2 --requests 10   # the tests' tiny model

Then, at each `--concurrency` above 1, by turns: that many callers at once through the miner, against
the same prompts answered by hand `axon.max_concurrency` at a time (as the miner runs them), each
request timed from the batch's start to its answer, queueing included.

Builds a random-weight Llama (no download), serves it with the llama recipe on loopback, and
alternates the two ways of answering the same prompts, one request at a time: `generate` on the
miner's own model object, and a signed request through the miner (blacklist, signature, cache
off, scheduler, chat template, incremental decoding, HTTP). Medians of each; greedy decoding,
so both produce the same tokens. Streaming: time to the first chunk through the miner, against
the time `generate` takes to its first text, decoded the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from declarative_miner.chain import dev  # noqa: E402
from declarative_miner.client import MinerClient  # noqa: E402
from declarative_miner.config import compose  # noqa: E402
from declarative_miner.miner import Miner  # noqa: E402
from declarative_miner.prompts.transformers_model import IncrementalText  # noqa: E402
from declarative_miner.wallet import open_wallet  # noqa: E402
from tests import tiny_model  # noqa: E402

PROMPTS = ["what is two plus two?", "tell me about the quick brown fox", "hello world, how are you today?"]


def by_hand(backend, text: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first text, seconds in all, new tokens) of `generate` on the model, decoding
    as the miner does."""
    inputs = backend.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)
    first = []
    started = time.perf_counter()
    feed = IncrementalText(backend.tokenizer, lambda piece: first or first.append(time.perf_counter()))
    torch.set_num_threads(backend.threads)  # as the miner generates
    with torch.inference_mode():
        output = backend.model.generate(**inputs, max_new_tokens=tokens, do_sample=False, streamer=feed,
                                        pad_token_id=backend.tokenizer.pad_token_id)
    return first[0] - started, time.perf_counter() - started, output.shape[1] - inputs["input_ids"].shape[1]


def through_miner(client: MinerClient, text: str, stream: bool) -> float:
    """Seconds to the whole answer, or to the first chunk when streaming."""
    started = time.perf_counter()
    if not stream:
        assert client.prompt([text]).status == 200
        return time.perf_counter() - started
    first = []
    reply = client.stream([text], on_chunk=lambda chunk: first or first.append(time.perf_counter()))
    assert reply.status == 200, reply.reason
    return first[0] - started


def print_timings(rows) -> None:
    """A table of (name, seconds) rows: median, min and max in ms (shared with benchmarks/openai_server.py)."""
    print(f"{'':34}{'median':>10}{'min':>10}{'max':>10}")
    for name, values in rows:
        print(f"{name:34}{statistics.median(values) * 1e3:>8.1f}ms{min(values) * 1e3:>8.1f}ms"
              f"{max(values) * 1e3:>8.1f}ms")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The random Llama to build and how much to ask of it (shared with benchmarks/openai_server.py)."""
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer")
    parser.add_argument("--requests", type=int, default=12, help="of each kind")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="prompt.threads (default: the recipe's)")
    parser.add_argument("--concurrency", default="1,4", help="callers at once (1: the paired rounds above)")
    parser.add_argument("--turns", type=int, default=3, help="batches of each way at each concurrency above 1")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="axon.max_concurrency: generations at once (default: the recipe's, 2)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dm-model-bench-"))
    # An ASCII-only vocabulary: random weights then write text from the first token, as a trained
    # model does, instead of byte runs that are no text yet (which no streamer can send early).
    model = tiny_model.build(home / "model", hidden=args.hidden, layers=args.layers, every_byte=False)
    config = compose([f"home={home}", "axon.port=0", "metrics.port=null", "+recipe=llama", f"prompt.model={model}",
                           f"prompt.max_new_tokens={args.tokens}", "cache.ttl=0", "blacklist=open",
                      *([f"prompt.threads={args.threads}"] if args.threads else []),
                      *([f"axon.max_concurrency={args.max_concurrency}"] if args.max_concurrency else [])])
    miner = Miner(config)
    backend = miner.backend
    with miner:
        signer = open_wallet(dev.DEV_VALIDATOR, "default", str(home / "dev" / "wallets")).hotkey
        client = MinerClient(signer, "127.0.0.1", miner.port, receiver=miner.hotkey)
        for text in PROMPTS:  # warm-up: first calls allocate and fill caches
            by_hand(backend, text, args.tokens), through_miner(client, text, False)
        direct, served, first_direct, first_served, counted = [], [], [], [], set()
        for i in range(args.requests):
            text = PROMPTS[i % len(PROMPTS)]
            to_first, total, tokens = by_hand(backend, text, args.tokens)
            direct.append(total), first_direct.append(to_first), counted.add(tokens)
            served.append(through_miner(client, text, stream=False))
            first_served.append(through_miner(client, text, stream=True))
        client.close()
        crowded = [(c, at_once(backend, miner, signer, c, config.axon.max_concurrency, args))
                   for c in (int(level) for level in args.concurrency.split(",")) if c > 1]
    params = backend.model.num_parameters()
    med = statistics.median
    print(f"model: random Llama, {params:,} parameters, {args.tokens} new tokens "
          f"(generated: {sorted(counted)}), torch threads {backend.threads}, {args.requests} requests of each kind")
    print_timings((("generate() by hand, whole answer", direct), ("through the miner, whole answer", served),
                   ("generate() by hand, first text", first_direct), ("through the miner, first chunk", first_served)))
    # Each request through the miner is paired with the generate() call just before it: on a shared
    # machine, neighbours in time see the same load, so the median of paired ratios is the steadier figure.
    paired = med([s / d for s, d in zip(served, direct)]) - 1
    print(f"overhead of the miner: {paired:+.1%} (median of paired ratios; medians alone: "
          f"{med(served) / med(direct) - 1:+.1%}, {(med(served) - med(direct)) * 1e3:+.1f} ms per request; target <= 5%)")
    print(f"first chunk: {med(first_served) * 1e3:.1f} ms through the miner vs {med(first_direct) * 1e3:.1f} ms by hand "
          f"({(med(first_served) - med(first_direct)) * 1e3:+.1f} ms); {med(first_served) / med(served):.1%} of the "
          "whole answer's time")

    for c, (hand, served, overheads) in crowded:
        print(f"c={c}: whole answer, median from the batch's start: generate() by hand "
              f"{config.axon.max_concurrency} at a time {med(hand) * 1e3:.1f} ms, through the miner "
              f"{med(served) * 1e3:.1f} ms; overhead of the miner {med(overheads):+.1%} (median over turns)")


def at_once(backend, miner: Miner, signer, callers: int, slots: int, args) -> tuple[list, list, list]:
    """`args.turns` batches each way of `callers` prompts asked at once: by hand `slots` at a time, and
    through the miner; (by hand's times, the miner's, each turn's ratio of medians - 1)."""
    clients = [MinerClient(signer, "127.0.0.1", miner.port, receiver=miner.hotkey) for _ in range(callers)]
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(callers)]

    def timed(workers: int, ask) -> list[float]:
        begun = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda i: (ask(i), time.perf_counter() - begun)[1], range(callers)))

    hand, served, overheads = [], [], []
    try:
        for _ in range(args.turns):
            by_hands = timed(slots, lambda i: by_hand(backend, texts[i], args.tokens))
            through = timed(callers, lambda i: through_miner(clients[i], texts[i], stream=False))
            hand += by_hands
            served += through
            overheads.append(statistics.median(through) / statistics.median(by_hands) - 1)
    finally:
        for client in clients:
            client.close()
    return hand, served, overheads


if __name__ == "__main__":
    main()
