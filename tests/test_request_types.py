"""Real subnets' request types, declared in YAML in an operator's own config directory and queried as
those subnets' validators query them: a real bittensor 10.5.0 Dendrite with classes written from the
subnets' published protocol definitions (tests/v10/dendrite_driver.py), and btauth/1 signed by
bittensor 11's own `http_auth`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from bittensor import http_auth

from declarative_miner.config import compose
from declarative_miner.errors import ConfigError
from declarative_miner.miner import Miner

from .test_v10_dendrite import dendrite

pytestmark = pytest.mark.slow
OWN_CONFIG = Path(__file__).parent / "data" / "conf"
SUBNETS = [f"hydra.searchpath=[file://{OWN_CONFIG}]", "+recipe=subnets", "cache.ttl=0"]


def test_sn23_mixed_pipeline_params_are_served_as_the_stock_axon_serves_them(v10_python, make_miner, wallets_dir):
    with make_miner(*SUBNETS) as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", "sn23")["sn23"]
    assert seen["is_success"] and seen["image"] == "png of a cat (7)", seen
    assert seen["response_dict"] == {"pipeline_params": {"num_inference_steps": 30, "guidance_scale": 7.5,
                                                         "negative_prompt": "blurry"}, "model_name": "dreamshaper"}


def test_nested_objects_tensors_and_list_and_dict_fields_through_a_real_dendrite(v10_python, make_miner, wallets_dir):
    """(A v10 Dendrite cannot send a `bytes` field at all: aiohttp's json.dumps refuses bytes. Bytes
    are tested with btauth/1 below.)"""
    with make_miner(*SUBNETS) as miner:
        seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", "targon", "tensor", "defaults")
    assert seen["targon"]["completion"] == "0.25 0.5 9 ['\\n', 'END']", seen["targon"]
    assert seen["tensor"]["is_success"] and seen["tensor"]["same"] and seen["tensor"]["dtype"] == "float32"
    assert seen["defaults"]["counts"] == [2, 2], seen["defaults"]


def _signed(miner, hotkeys, route: str, body: dict) -> tuple[int, dict]:
    import httpx

    raw = json.dumps(body).encode()
    headers = http_auth.sign(hotkeys["dev-validator"], method="POST", path=route, body=raw, receiver_ss58=miner.hotkey)
    reply = httpx.post(f"http://127.0.0.1:{miner.port}{route}", content=raw, headers=headers)
    return reply.status_code, reply.json()


def test_list_and_dict_defaults_are_each_requests_own_copy(make_miner, hotkeys):
    """No request_class: the request is made from the fields, and a body leaving a field out gets a
    fresh copy of its default (the answer mutates it; the next request does not see that)."""
    with make_miner(*SUBNETS) as miner:
        replies = [_signed(miner, hotkeys, "/Tagged", {"text": f"t{i}"}) for i in range(3)]
    assert [(status, reply["count"]) for status, reply in replies] == [(200, 2)] * 3
    assert replies[0][1]["tags"] == ["seen"]  # the reply carries the request as the answer left it


def test_bytes_are_base64_text_and_refused_as_such_when_not(make_miner, hotkeys):
    with make_miner(*SUBNETS) as miner:
        good = _signed(miner, hotkeys, "/Blob", {"payload": base64.b64encode(b"\x00\xff" * 10).decode()})
        bad = _signed(miner, hotkeys, "/Blob", {"payload": "not base64!"})
        nested = _signed(miner, hotkeys, "/Inference", {"query": "q", "sampling_params": {"temperature": "hot"}})
    assert good == (200, {"payload": base64.b64encode(b"\x00\xff" * 10).decode(), "size": 20})
    assert bad[0] == 422 and bad[1]["reason"] == "'payload': should be base64 text; 'payload' is bytes"
    assert nested[0] == 422 and "'sampling_params.temperature': should be a number" in nested[1]["reason"]
    assert "'sampling_params.top_p' is required" in nested[1]["reason"]


def test_sn1_max_tokens_bounds_the_models_answer(v10_python, make_miner, wallets_dir, tiny_model):
    """SN1's StreamPromptingSynapse carries max_tokens; `arguments` passes it to the model (capped by
    prompt.max_new_tokens)."""
    sn1 = ["+synapses.StreamPromptingSynapse={inputs: {roles: {type: 'list[str]', default: []}, messages: 'list[str]', "
           "max_tokens: {type: int, default: 64}}, outputs: {completion: str}, hash_fields: [messages], stream: true, "
           "answer: prompt, arguments: {max_tokens: max_new_tokens}}"]
    with make_miner("+recipe=llama", f"prompt.model={tiny_model}", "prompt.max_new_tokens=24", "cache.ttl=0",
                    *sn1) as miner:
        generated = []
        for max_tokens in (3, 1000):
            before = miner.usage.totals()["completion_tokens"]
            seen = dendrite(v10_python, miner, wallets_dir, "dev-validator", f"sn1:{max_tokens}")
            generated.append((miner.usage.totals()["completion_tokens"] - before, seen[f"sn1:{max_tokens}"]["completion"]))
    (short, short_text), (long, long_text) = generated
    assert short == 3 and short_text, generated  # the request's own bound
    assert 3 < long <= 24 and long_text.startswith(short_text), generated  # capped by prompt.max_new_tokens


@pytest.mark.parametrize("override, key, words", [
    ("+types.Params={temperature: flot}", "types.Params.temperature", "unknown type (got 'flot'"),
    ("+types.Params=7", "types.Params", "not an object (got 7"),
    ("+synapses.X={inputs: {p: Missing}, outputs: {y: int}, answer: {_target_: tests.prompts.measure}}",
     "synapses.X.inputs.p", "unknown type (got 'Missing'"),
    ("+synapses.X={inputs: {tags: {type: 'list[str]', default: [1]}}, outputs: {y: int}, "
     "answer: {_target_: tests.prompts.measure}}", "synapses.X.inputs.tags.default", "does not fit its type"),
    ("+synapses.X={inputs: {b: {type: bytes, default: 'not base64!'}}, outputs: {y: int}, "
     "answer: {_target_: tests.prompts.measure}}", "synapses.X.inputs.b.default", "does not fit its type"),
    ("+synapses.X={inputs: {a: {type: any, defualt: 1}}, outputs: {y: int}, answer: {_target_: tests.prompts.measure}}",
     "synapses.X.inputs.a.defualt", "unknown key"),
    ("+synapses.X={inputs: {n: int}, outputs: {y: int}, answer: {_target_: tests.prompts.measure}, "
     "arguments: {m: limit}}", "synapses.X.arguments.m", "not an input"),
    ("+synapses.X={inputs: {n: int}, outputs: {y: int}, answer: {_target_: tests.prompts.measure}, "
     "arguments: {n: limit}}", "synapses.X.arguments", "the answer does not take these arguments (got limit"),
    ("+synapses.StreamPrompting.arguments={messages: temperature}", "synapses.StreamPrompting.arguments",
     "the answer does not take these arguments (got temperature"),
])
def test_each_declaration_form_names_its_key_when_wrong(home, override, key, words):
    with pytest.raises(ConfigError) as caught:
        Miner(compose([f"home={home}", override]))
    assert any(p.key == key and words in p.message for p in caught.value.problems), caught.value.problems


def test_the_command_line_client_speaks_every_wire_format_and_any_declared_type(make_miner, home, tmp_path):
    import subprocess
    import sys

    def client(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "declarative_miner.client", "--port", str(miner.port),
                               "--wallet-path", str(home / "dev" / "wallets"), *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)

    with make_miner("+recipe=template_dummy", "cache.ttl=0") as miner:
        said = {wire: client(f"said in {wire}", "--wire-format", wire) for wire in ("btauth", "v10", "epistula")}
        streamed = client("one two", "--stream", "--wire-format", "epistula")
        dummy = {wire: client("--synapse", "Dummy", '{"dummy_input": 21}', "--wire-format", wire)
                 for wire in ("btauth", "v10", "epistula")}
        refused = client("--synapse", "Dummy", '{"dummy_input": "21"}')
    assert {wire: r.stdout for wire, r in said.items()} == {w: f"said in {w}\n" for w in said}, said
    assert streamed.stdout == "one two\n", streamed.stderr
    assert all(json.loads(r.stdout)["dummy_output"] == 42 for r in dummy.values()), dummy
    assert refused.returncode == 1 and refused.stderr.startswith("422 malformed body: 'dummy_input': should be an integer")
