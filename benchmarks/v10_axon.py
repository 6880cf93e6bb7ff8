"""A stock bittensor 10.5.0 `Axon` serving the same `Prompting` echo. Runs in a bittensor 10 venv:

    <bt10 venv>/bin/python benchmarks/v10_axon.py --port 8102 --wallets DIR --wallet dev-miner
"""

import argparse
import time
from typing import ClassVar, List

from bittensor.utils import networking

networking.get_external_ip = lambda: "127.0.0.1"  # no internet here

import bittensor as bt  # noqa: E402
import pydantic  # noqa: E402


class Prompting(bt.Synapse):
    roles: List[str] = pydantic.Field(..., frozen=True)
    messages: List[str] = pydantic.Field(..., frozen=True)
    completion: str = ""
    required_hash_fields: ClassVar[tuple] = ("messages",)


def forward(synapse: Prompting) -> Prompting:
    synapse.completion = synapse.messages[-1]
    return synapse


parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--wallets", required=True)
parser.add_argument("--wallet", required=True)
args = parser.parse_args()
axon = bt.Axon(wallet=bt.Wallet(name=args.wallet, hotkey="default", path=args.wallets), port=args.port,
               ip="127.0.0.1", external_ip="127.0.0.1")
axon.fast_config.host = "127.0.0.1"  # the v10 Axon binds 0.0.0.0 whatever ip= says
axon.attach(forward_fn=forward).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
