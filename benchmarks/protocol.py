"""uvicorn's httptools protocol with the miner's guards (server/http.py) against the bare one. By hand:

    python benchmarks/protocol.py            # 1,000-request batches, 15 rounds: ~5 seconds

No sockets: each protocol gets a transport that keeps what it is sent, and the same signed-looking
request (ten headers and a small JSON body) is fed to it whole, as one read from the kernel
delivers it, then answered by a minimal ASGI app on uvloop, as under uvicorn. What is measured is
the protocol's own work per request (parsing, the guards, the response framing); the batches
alternate, and the minimum is reported, since a shared machine's noise only adds time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Optional

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from declarative_miner.config import compose, to_settings
from declarative_miner.server.http import guarded_protocol
from declarative_miner.server.shedding import Shedding

BODY = json.dumps({"roles": ["user"], "messages": ["what is 2+2?"]}).encode()
HEADERS = [("host", 14), ("user-agent", 20), ("content-type", 16), ("x-bittensor-version", 1),
           ("x-bittensor-hotkey", 48), ("x-bittensor-receiver", 48), ("x-bittensor-nonce", 19),
           ("x-bittensor-signature", 130)]  # name and value length, as a btauth/1 request carries them
REQUEST = (b"POST /Prompting HTTP/1.1\r\n" + b"".join(b"%s: %s\r\n" % (name.encode(), b"x" * size) for name, size in HEADERS)
           + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
ANSWER = b'{"completion": "4"}'


class Transport(asyncio.Transport):
    """Keeps nothing; tells the waiting batch when a response's body has been written."""

    def __init__(self):
        super().__init__()
        self.answered: Optional[asyncio.Future] = None

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8091)}.get(name, default)

    def write(self, data: bytes) -> None:
        if data.endswith(ANSWER) and self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def connected(protocol_class: type) -> tuple[HttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", limit_concurrency=1000,
                            http=protocol_class)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def measure(batch: int, rounds: int) -> dict[str, float]:
    axon = to_settings(compose()).axon  # the guards' bounds as the default miner sets them (miner.py)
    protocols = {"bare httptools protocol": connected(HttpToolsProtocol),
                 "with the miner's guards": connected(guarded_protocol(
                     axon.max_header_bytes, axon.request_timeout, axon.max_connections_per_ip, Shedding(0)))}
    loop, best = asyncio.get_running_loop(), {name: float("inf") for name in protocols}
    for r in range(rounds + 1):
        for name, (protocol, transport) in protocols.items():
            started = time.process_time()
            for _ in range(batch):
                transport.answered = loop.create_future()
                protocol.data_received(REQUEST)
                await transport.answered
            if r:  # the first round warms up
                best[name] = min(best[name], (time.process_time() - started) / batch * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    gc.collect()
    gc.disable()
    best = uvloop.run(measure(args.batch, args.rounds))
    bare = best["bare httptools protocol"]
    print(f"{'protocol, in process':34}{'µs a request (min of ' + str(args.rounds) + ' batches)':>36}{'vs bare':>10}")
    for name, micros in best.items():
        print(f"{name:34}{micros:>36.1f}{micros / bare:>9.2f}x")


if __name__ == "__main__":
    main()
