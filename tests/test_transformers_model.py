"""The llama recipe: a real (tiny, random-weight) transformers model loaded once and served over HTTP.

Random weights write gibberish, so these tests assert on tokens, determinism and agreement with a
direct `generate` call on the same model, never on what the text says.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import import_required, run_cli, wait_until

torch = import_required("torch", "the llama recipe needs: pip install -e '.[llama]'")
from declarative_miner.prompts.transformers_model import IncrementalText  # noqa: E402
from declarative_miner.prompting import Prompting  # noqa: E402

NEW_TOKENS = 12


@pytest.fixture
def llama(make_miner, tiny_model):
    """A running miner of the llama recipe over the tiny model (cache off: the same prompt twice)."""
    def start(*overrides: str):
        return make_miner("+recipe=llama", f"prompt.model={tiny_model}", "prompt.threads=1",
                          f"prompt.max_new_tokens={NEW_TOKENS}", "cache.ttl=0", *overrides)
    return start


def direct_generate(backend, chat: list[dict]) -> tuple[str, int]:
    """What calling `generate` by hand on the backend's own model answers: (text, new tokens)."""
    inputs = backend.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
    output = backend.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                    pad_token_id=backend.tokenizer.pad_token_id)
    new = output[0, inputs["input_ids"].shape[1]:]
    return backend.tokenizer.decode(new, skip_special_tokens=True), len(new)


def test_the_llama_recipe_answers_as_generate_would_streamed_or_not(llama, client_for):
    with llama() as miner:
        client, backend = client_for(miner), miner.backend
        expected, tokens = direct_generate(backend, [{"role": "user", "content": "hello world"}])
        plain = client.prompt(["hello world"])
        streamed = client.stream(["hello world"])
        v10 = client.stream(["hello world"], wire_format="v10")
    assert plain.status == streamed.status == v10.status == 200
    assert plain.completion == streamed.completion == v10.completion == expected
    assert len(streamed.chunks) > 1  # text arrives as it is generated, not at the end
    assert tokens == NEW_TOKENS
    assert backend.usage.totals()["completion_tokens"] == 3 * NEW_TOKENS


def test_the_model_loads_once_at_start_up_not_per_request(llama, client_for, monkeypatch):
    from declarative_miner.prompts import transformers_model

    loads = []
    real = transformers_model.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers_model.AutoModelForCausalLM, "from_pretrained",
                        lambda *args, **kwargs: loads.append(args) or real(*args, **kwargs))
    with llama() as miner:
        assert len(loads) == 1  # while the miner was built
        replies = [client_for(miner).prompt([text]) for text in ("one", "two", "three")]
    assert [reply.status for reply in replies] == [200] * 3
    assert len(loads) == 1  # and never again


def test_the_chat_goes_through_the_template_with_the_system_prompt_first(llama, client_for):
    with llama("prompt.system_prompt=be brief") as miner:
        backend = miner.backend
        reply = client_for(miner).prompt(["hi", "hello", "how are you"], roles=["user", "assistant", "user"])
        expected, _ = direct_generate(backend, [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you"}])
    assert (reply.status, reply.completion) == (200, expected)
    assert backend.usage.totals()["prompt_tokens"] > 20  # the whole chat, not the last message


def test_a_chat_the_template_refuses_gets_422_and_the_miner_keeps_serving(llama, client_for):
    with llama() as miner:
        client = client_for(miner)
        refused = client.prompt(["beep"], roles=["robot"])
        assert (refused.status, refused.error) == (422, "malformed body")
        assert "unknown role robot" in refused.reason
        assert client.prompt(["hello"]).status == 200


def test_a_prompt_longer_than_the_context_gets_422_with_the_sizes(llama, client_for):
    with llama() as miner:
        refused = client_for(miner).prompt(["the " * 5000])
    assert (refused.status, refused.error) == (422, "malformed body")
    assert refused.reason.endswith("tokens; this model's context is 4096")


def test_concurrent_requests_answer_as_they_would_alone(llama, client_for):
    with llama("axon.max_concurrency=2") as miner:
        client = client_for(miner)
        alone = [client.prompt([f"question {n}"]).completion for n in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda n: client.prompt([f"question {n}"]).completion, range(4)))
    assert together == alone


def test_request_timeout_stops_a_long_generation(make_miner, tiny_model, client_for):
    with make_miner("+recipe=llama", f"prompt.model={tiny_model}", "prompt.threads=1",
                    "prompt.max_new_tokens=4000", "axon.request_timeout=0.5") as miner:
        backend = miner.backend
        reply = client_for(miner).prompt(["go on and on"])
        assert (reply.status, reply.error) == (504, "prompt timed out")
        wait_until(lambda: backend.usage.totals()["requests"] == 1)  # generate() has returned
        stopped_at = backend.usage.totals()["completion_tokens"]
        assert 0 < stopped_at < 4000
        wait_until(lambda: not any(t.name == "generate" for t in threading.enumerate()))


def test_a_model_that_cannot_be_found_fails_validation_with_exit_2(home, tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_cli("+recipe=llama", f"prompt.model={missing}", f"home={home}", "mode=validate", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"prompt.model: no model there (got {missing}: no such directory" in result.stderr
    assert "Traceback" not in result.stderr

    hub = run_cli("+recipe=llama", "prompt.model=nobody/not-a-model", f"home={home}", "mode=validate", cwd=tmp_path)
    assert hub.returncode == 2, hub.stderr
    assert "prompt.model: cannot load it (got nobody/not-a-model" in hub.stderr
    assert "hf download nobody/not-a-model" in hub.stderr


def test_an_unreachable_hub_is_asked_once_and_named(home, tmp_path):
    """Not offline by choice: the hub (a closed port here) refuses; one short error, no retries."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"HF_ENDPOINT": endpoint}
    hub = run_cli("+recipe=llama", "prompt.model=nobody/not-a-model", f"home={home}", "mode=validate",
                  cwd=tmp_path, env=env)
    assert hub.returncode == 2, hub.stderr
    assert (f"prompt.model: cannot load it (got nobody/not-a-model: the hub at {endpoint} is unreachable and the "
            "model is not in the local cache") in hub.stderr
    assert "retry" not in hub.stderr.lower() and len(hub.stderr.splitlines()) <= 3, hub.stderr


def test_bad_generation_arguments_are_config_errors(home, tmp_path, tiny_model):
    result = run_cli("+recipe=llama", f"prompt.model={tiny_model}", "prompt.dtype=fp8", f"home={home}",
                     "mode=validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "prompt.dtype: out of range (got fp8; expected auto, float32, bfloat16, float16)" in result.stderr
    typo = run_cli("+recipe=llama", "+prompt.temprature=0.5", f"home={home}", "mode=validate", cwd=tmp_path)
    assert typo.returncode == 2 and "temprature" in typo.stderr


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(min_value=0, max_value=399), max_size=40))
def test_streamed_pieces_join_to_the_full_decode(tokenizer, ids):
    pieces: list[str] = []
    feed = IncrementalText(tokenizer, pieces.append)
    feed.put(torch.tensor([[1, 2, 3]]))  # the prompt, which generate() passes first
    for token in ids:
        feed.put(torch.tensor([token]))
    feed.end()
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all(pieces)


def test_the_system_prompt_leads_unless_the_chat_has_one():
    asked = Prompting(roles=["user"], messages=["hi"])
    assert asked.chat("be brief")[0] == {"role": "system", "content": "be brief"}
    own = Prompting(roles=["system", "user"], messages=["mine", "hi"])
    assert own.chat("be brief") == [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
