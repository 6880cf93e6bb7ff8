"""Runs under bittensor 10.5.0 in its own venv (never imported by pytest): queries a miner with a
real `bt.Dendrite` and prints what the Dendrite returned, as JSON, one object per scenario.

    python dendrite_driver.py WALLETS_DIR WALLET MINER_HOTKEY PORT SCENARIO...
"""

import asyncio
import json
import sys
from typing import ClassVar, List, Optional

from bittensor.utils import networking

networking.get_external_ip = lambda: "127.0.0.1"  # no internet here: the Dendrite asks at start

import bittensor as bt  # noqa: E402
import pydantic  # noqa: E402
from bittensor.core import tensor as bt_tensor  # noqa: E402

# bittensor 10 adds torch's dtypes at a Tensor's first use even where torch is not installed (it is not
# here); numpy's are the ones this driver sends.
bt_tensor.dtypes.torch = True


class Prompting(bt.Synapse):
    """The text-prompting lineage's synapse, as v10 validators define it."""

    roles: List[str] = pydantic.Field(..., frozen=True)
    messages: List[str] = pydantic.Field(..., frozen=True)
    completion: str = ""
    required_hash_fields: ClassVar[tuple] = ("messages",)


class StreamPrompting(bt.StreamingSynapse):
    roles: List[str] = pydantic.Field(..., frozen=True)
    messages: List[str] = pydantic.Field(..., frozen=True)
    completion: str = ""
    required_hash_fields: ClassVar[tuple] = ("messages",)

    async def process_streaming_response(self, response):
        async for chunk in response.content.iter_any():
            tokens = chunk.decode("utf-8").split("\n")
            for token in tokens:
                if token:
                    self.completion += token
            yield tokens

    def extract_response_json(self, response) -> dict:
        # As the text-prompting lineage does: terminal infos from the headers, fields from self.
        headers = {k.decode("utf-8"): v.decode("utf-8") for k, v in response.__dict__["_raw_headers"]}

        def info(prefix):
            return {k.split(prefix + "_", 1)[1]: v for k, v in headers.items() if k.startswith(prefix)}

        return {"name": headers.get("name", ""), "timeout": float(headers.get("timeout", 0)),
                "dendrite": info("bt_header_dendrite"), "axon": info("bt_header_axon"),
                "roles": self.roles, "messages": self.messages, "completion": self.completion}


class Dummy(bt.Synapse):
    """The opentensor subnet template's synapse, as its template/protocol.py writes it."""

    dummy_input: int
    dummy_output: Optional[int] = None

    def deserialize(self) -> int:
        return self.dummy_output


# Real subnets' request types, written from their published protocol definitions (protocols.md §7).

class ImageGenerating(bt.Synapse):
    """SN23 (NicheImage): a prompt and pipeline parameters of mixed types, an image and a dict back."""

    prompt: str = ""
    seed: int = 0
    model_name: str = ""
    pipeline_params: dict = {}
    request_dict: dict = {}
    image: str = ""
    response_dict: dict = {}


class SamplingParams(pydantic.BaseModel):
    """Targon-style sampling parameters: a nested object."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: List[str] = []


class Inference(bt.Synapse):
    query: str
    sampling_params: SamplingParams = SamplingParams()
    completion: str = ""


class TensorEcho(bt.Synapse):
    """An older embedding subnet's shape: a bittensor Tensor in, a Tensor out."""

    tensor: bt.Tensor
    echoed: Optional[bt.Tensor] = None


class Tagged(bt.Synapse):
    """List and dict fields with defaults."""

    text: str
    tags: List[str] = []
    meta: dict = {}
    count: int = 0


class StreamPromptingSynapse(bt.StreamingSynapse):
    """SN1 (macrocosm-os/prompting): the chat, a per-request token bound, and (as SN1 writes it)
    `required_hash_fields` as a field, so it travels in the body too."""

    roles: List[str] = pydantic.Field(..., frozen=True)
    messages: List[str] = pydantic.Field(..., frozen=True)
    required_hash_fields: List[str] = pydantic.Field(["messages"], frozen=True)
    completion: str = ""
    max_tokens: int = 64

    async def process_streaming_response(self, response):
        async for chunk in response.content.iter_any():
            text = chunk.decode("utf-8")
            self.completion += text
            yield text

    def extract_response_json(self, response) -> dict:
        headers = {k.decode("utf-8"): v.decode("utf-8") for k, v in response.__dict__["_raw_headers"]}
        return {"name": headers.get("name", ""), "timeout": float(headers.get("timeout", 0)),
                "roles": self.roles, "messages": self.messages, "completion": self.completion,
                "max_tokens": self.max_tokens}


def view(synapse) -> dict:
    return {"is_success": synapse.is_success, "completion": synapse.completion,
            "status_code": synapse.dendrite.status_code, "status_message": synapse.dendrite.status_message}


def view_any(synapse) -> dict:
    return {"is_success": synapse.is_success, "status_code": synapse.dendrite.status_code,
            "status_message": synapse.dendrite.status_message}


async def main(wallets: str, wallet: str, miner: str, port: int, scenarios: list) -> None:
    dendrite = bt.Dendrite(wallet=bt.Wallet(name=wallet, hotkey="default", path=wallets))
    axon = bt.AxonInfo(version=0, ip="127.0.0.1", port=port, ip_type=4, hotkey=miner, coldkey=miner)
    for scenario in scenarios:
        if scenario == "plain":
            reply = await dendrite.call(axon, Prompting(roles=["user"], messages=["hello from v10"]), timeout=12)
            result = view(reply)
        elif scenario == "stream":
            chunks, final = [], None
            synapse = StreamPrompting(roles=["user"], messages=["one two three"])
            async for item in dendrite.call_stream(axon, synapse, timeout=12):
                if isinstance(item, bt.Synapse):
                    final = item
                else:
                    chunks.append(item)
            result = {**view(final), "chunks": len(chunks)}
        elif scenario == "replay":
            synapse = dendrite.preprocess_synapse_for_request(
                axon, Prompting(roles=["user"], messages=["replayed"]), 12)
            url = f"http://127.0.0.1:{port}/Prompting"
            statuses = []
            for _ in range(2):
                async with (await dendrite.session).post(url, headers=synapse.to_headers(),
                                                         json=synapse.model_dump()) as response:
                    statuses.append(response.status)
            result = {"statuses": statuses}
        elif scenario == "dummy":
            replies = await dendrite([axon], Dummy(dummy_input=21), deserialize=True, timeout=12)
            result = {"outputs": replies}
        elif scenario == "ping":  # the template's ping_uids / get_query_api_nodes
            responses = await dendrite([axon], bt.Synapse(), deserialize=False, timeout=12)
            result = {"status_codes": [r.dendrite.status_code for r in responses],
                      "status_messages": [r.dendrite.status_message for r in responses]}
        elif scenario == "sn23":
            params = {"num_inference_steps": 30, "guidance_scale": 7.5, "negative_prompt": "blurry"}
            reply = await dendrite.call(axon, ImageGenerating(prompt="a cat", seed=7, model_name="dreamshaper",
                                                              pipeline_params=params), timeout=12)
            result = {**view_any(reply), "image": reply.image, "response_dict": reply.response_dict}
        elif scenario == "targon":
            sampling = SamplingParams(temperature=0.25, top_p=0.5, max_new_tokens=9, stop=["\n", "END"])
            reply = await dendrite.call(axon, Inference(query="hi", sampling_params=sampling), timeout=12)
            result = {**view_any(reply), "completion": reply.completion}
        elif scenario == "tensor":
            import numpy
            sent = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
            reply = await dendrite.call(axon, TensorEcho(tensor=bt.Tensor.serialize(sent)), timeout=12)
            echoed = reply.echoed.numpy() if reply.echoed is not None else None
            result = {**view_any(reply), "same": echoed is not None and echoed.tolist() == sent.tolist(),
                      "dtype": reply.echoed.dtype if reply.echoed is not None else None}
        elif scenario == "defaults":
            replies = [await dendrite.call(axon, Tagged(text=f"t{i}"), timeout=12) for i in range(2)]
            result = {**view_any(replies[1]), "counts": [r.count for r in replies]}
        elif scenario.startswith("sn1"):  # sn1:N, the request's own max_tokens
            synapse = StreamPromptingSynapse(roles=["user"], messages=["Tell me a long story."],
                                             max_tokens=int(scenario.partition(":")[2]))
            async for item in dendrite.call_stream(axon, synapse, timeout=60):
                final = item
            result = {"completion": final.completion if isinstance(final, bt.Synapse) else synapse.completion}
        elif scenario.startswith("burst"):  # burst:N, N requests at once from this one Dendrite
            count = int(scenario.partition(":")[2])
            synapses = [Prompting(roles=["user"], messages=[f"burst {i}"]) for i in range(count)]
            replies = await asyncio.gather(*(dendrite.call(axon, synapse, timeout=60) for synapse in synapses))
            messages = {}
            for reply in replies:
                if not reply.is_success:
                    messages[reply.dendrite.status_message] = messages.get(reply.dendrite.status_message, 0) + 1
            result = {"served": sum(r.is_success and r.completion == r.messages[0] for r in replies),
                      "refused": messages}
        print(json.dumps({"scenario": scenario, **result}), flush=True)
    await dendrite.aclose_session()


if __name__ == "__main__":
    wallets, wallet, miner, port, *scenarios = sys.argv[1:]
    asyncio.run(main(wallets, wallet, miner, int(port), scenarios))
