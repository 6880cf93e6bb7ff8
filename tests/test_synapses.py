"""Request types declared in YAML (the `synapses` group), asked as strangers ask: signed with
bittensor 11's own `http_auth`, sent with plain httpx, never through this project's client."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from bittensor import http_auth

from .test_config import run_cli


def ask(miner, hotkey, route: str, body: dict | bytes) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = http_auth.sign(hotkey, method="POST", path=route, body=raw, receiver_ss58=miner.hotkey)
    return httpx.post(f"http://127.0.0.1:{miner.port}{route}", content=raw,
                      headers={**headers, "content-type": "application/json"}, timeout=10)


def test_a_type_declared_in_a_recipe_is_answered_with_its_outputs(make_miner, hotkeys):
    with make_miner("+recipe=template_dummy") as miner:
        reply = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 21})
    assert (reply.status_code, reply.json()) == (200, {"dummy_input": 21, "dummy_output": 42})


@pytest.mark.parametrize("body, reason", [
    ({"dummy_input": "21"}, "'dummy_input': should be an integer; 'dummy_input' is int"),
    ({"dummy_input": 2.5}, "'dummy_input': should be an integer; 'dummy_input' is int"),
    ({}, "'dummy_input' is required; 'dummy_input' is int"),
])
def test_a_body_that_does_not_fit_the_declared_fields_is_a_422_naming_field_and_type(make_miner, hotkeys,
                                                                                     body, reason):
    with make_miner("+recipe=template_dummy") as miner:
        reply = ask(miner, hotkeys["dev-validator"], "/Dummy", body)
        served = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 1})
    assert (reply.status_code, reply.json()) == (422, {"error": "malformed body", "reason": reason})
    assert served.json()["dummy_output"] == 2  # and the miner serves the next caller


def test_an_answer_that_does_not_fit_the_outputs_is_a_500_naming_the_field(make_miner, hotkeys):
    with make_miner("+recipe=template_dummy", "synapses.Dummy.answer._target_=builtins.repr") as miner:
        reply = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 3})
    assert reply.status_code == 500
    assert "Dummy's answer does not fit its outputs: 'dummy_output': should be an integer" in (
        reply.json()["reason"])


def test_a_type_is_cached_by_its_inputs_and_who_answers(make_miner, hotkeys):
    with make_miner("+recipe=template_dummy") as miner:
        first = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 5})
        again = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 5})
        other = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 6})
    assert (first.status_code, again.status_code, other.status_code) == (200, 409, 200)


def test_the_ping_is_answered_to_any_signed_caller_and_refused_unsigned(make_miner, hotkeys):
    with make_miner() as miner:
        signed = ask(miner, hotkeys["stranger"], "/Synapse", {})
        unsigned = httpx.post(f"http://127.0.0.1:{miner.port}/Synapse", json={}, timeout=10)
        unknown = ask(miner, hotkeys["dev-validator"], "/Dummy", {"dummy_input": 1})
    assert (signed.status_code, signed.json()) == (200, {})
    assert unsigned.status_code == 401
    assert (unknown.status_code, unknown.json()["reason"]) == (
        404, "no route POST /Dummy; try POST /Prompting, POST /StreamPrompting, POST /Synapse, GET /health or GET /ready")


@pytest.mark.parametrize("override, message", [
    ("+synapses.Dummy.inputs.x=integer", "synapses.Dummy.inputs.x: unknown type (got 'integer'; expected str, int"),
    ("synapses.Prompting.hash_fields=[completion]", "synapses.Prompting.hash_fields: names a field that is not an "
                                                    "input (got completion; expected one of roles, messages)"),
    ("+synapses.Dummy.outputs.n=int", "synapses.Dummy.outputs: must be {completion: str} for answer: prompt, "
                                      "which fills the completion (got n)"),
    ("+synapses.Tale.outputs.n=int +synapses.Tale.stream=true +synapses.Tale.answer._target_=builtins.repr",
     "synapses.Tale.outputs: must be one str field to be streamed (got n)"),
    ("+synapses.Synapse.inputs.x=int", "synapses.Synapse: not a synapse name (got 'Synapse'"),
    ("synapses.Prompting.request_class=builtins.dict", "synapses.Prompting.request_class: builtins.dict lacks "
                                                       "declared fields"),
])
def test_a_bad_declaration_exits_2_naming_the_key(tmp_path, home, override, message):
    result = run_cli(f"home={home}", "mode=validate", *override.split(), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_lists_the_declared_types(tmp_path, home):
    result = run_cli(f"home={home}", "mode=validate", "+recipe=template_dummy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("synapses   Prompting <- prompt, StreamPrompting (streamed) <- prompt, Dummy <- "
            '{"_target_": "declarative_miner.prompts.arithmetic.double"}, and the v10 ping /Synapse') in result.stdout


def test_the_client_and_its_errors_load_without_hydra():
    probe = ("import sys, declarative_miner.client, declarative_miner.errors, declarative_miner.wallet; "
             "print(sorted(m for m in ('hydra', 'omegaconf') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_misspelt_key_of_a_type_is_named(tmp_path, home):
    result = run_cli(f"home={home}", "mode=validate", "+synapses.Prompting.hash_field=[roles]", cwd=tmp_path)
    assert result.returncode == 2
    assert "synapses.Prompting.hash_field: unknown key (got hash_field; expected one of inputs, outputs" in result.stderr


def test_a_prompt_answered_type_of_another_name_is_cached_by_its_inputs(make_miner, hotkeys):
    """The seed's types removed, `prompt` answers a type of another name: keyed by its inputs."""
    chat = ["~synapses.Prompting", "~synapses.StreamPrompting", "+synapses.Chat.inputs.messages='list[str]'",
            "+synapses.Chat.inputs.roles='list[str]'", "+synapses.Chat.outputs.completion=str",
            "+synapses.Chat.request_class=declarative_miner.prompting.Prompting"]
    with make_miner(*chat) as miner:
        asked = {"roles": ["user"], "messages": ["asked twice"]}
        first, again = (ask(miner, hotkeys["dev-validator"], "/Chat", asked) for _ in range(2))
        gone = ask(miner, hotkeys["dev-validator"], "/Prompting", asked)
    assert (first.status_code, first.json()["completion"]) == (200, "asked twice")
    assert again.status_code == 409
    assert gone.status_code == 404
