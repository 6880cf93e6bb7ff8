"""The openai recipe against a real OpenAI-compatible server: `transformers serve` on loopback,
serving the same tiny model the llama recipe loads in process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import gauge, import_required, run_cli, wait_until

import_required("openai", "the openai recipe needs: pip install -e '.[openai]'")

NEW_TOKENS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def model_server(tiny_model, tmp_path_factory):
    """`transformers serve` with the tiny model preloaded; yields its /v1 URL."""
    import_required("fastapi", "`transformers serve` needs: pip install 'transformers[serving]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(tiny_model),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health") or server.poll() is not None, timeout=120)
        assert server.poll() is None, f"transformers serve exited:\n{log.read_text()[-3000:]}"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def openai_miner(make_miner, tiny_model):
    def start(base_url: str, *overrides: str):
        return make_miner("+recipe=openai", f"prompt.base_url={base_url}", f"prompt.model={tiny_model}",
                          f"prompt.max_tokens={NEW_TOKENS}", "cache.ttl=0", *overrides)
    return start


def test_the_openai_recipe_serves_the_model_server_streamed_or_not(openai_miner, model_server, client_for):
    with openai_miner(model_server) as miner:
        client = client_for(miner)
        plain = client.prompt(["hello world"])
        streamed = client.stream(["hello world"])
        v10 = client.stream(["hello world"], wire_format="v10")
        usage = miner.usage.totals()
        ready = httpx.get(f"http://127.0.0.1:{miner.port}/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "reasons": []})
    assert plain.status == streamed.status == v10.status == 200
    assert plain.completion == streamed.completion == v10.completion != ""  # greedy: deterministic
    assert len(streamed.chunks) > 1
    # Three times the same prompt: the server's count of it, three times (0 if the count was dropped).
    assert usage["prompt_tokens"] > 0 and usage["prompt_tokens"] % 3 == 0
    assert usage == {"requests": 3, "prompt_tokens": usage["prompt_tokens"], "completion_tokens": 3 * NEW_TOKENS}


def test_the_model_server_answers_what_the_in_process_model_does(openai_miner, model_server, make_miner,
                                                               tiny_model, client_for):
    with openai_miner(model_server) as remote:
        over_http = client_for(remote).prompt(["what is two plus two?"]).completion
    with make_miner("+recipe=llama", f"prompt.model={tiny_model}", f"prompt.max_new_tokens={NEW_TOKENS}",
                    "prompt.threads=1") as local:
        in_process = client_for(local).prompt(["what is two plus two?"]).completion
    assert over_http == in_process


def test_a_server_that_is_down_gets_503_with_a_reason_and_the_miner_keeps_serving(openai_miner, client_for):
    down = f"http://127.0.0.1:{_free_port()}/v1"
    with openai_miner(down) as miner:
        client = client_for(miner)
        plain, streamed = client.prompt(["anyone there?"]), client.stream(["anyone there?"])
        health = httpx.get(f"http://127.0.0.1:{miner.port}/health")
        ready = httpx.get(f"http://127.0.0.1:{miner.port}/ready")
        ready_gauge = gauge(miner, "miner_ready")
    # Alive, and not ready, saying why: the background probe found the model server down.
    assert (ready.status_code, ready.json()["status"], ready_gauge) == (503, "not ready", 0)
    assert [reason.split(" (")[0] for reason in ready.json()["reasons"]] == [
        f"the model server at {down} does not answer"]
    for reply in (plain, streamed):
        assert (reply.status, reply.error) == (503, "unavailable")
        assert f"the model server at {down} is unreachable" in reply.reason
    assert health.status_code == 200


def test_the_api_key_comes_from_the_environment_never_the_yaml(home, tmp_path, model_server):
    literal = run_cli("+recipe=openai", "+prompt.api_key=sk-secret", f"home={home}", "mode=validate", cwd=tmp_path)
    assert literal.returncode == 2 and "api_key" in literal.stderr
    assert "sk-secret" not in literal.stderr + literal.stdout  # a refused secret is never printed
    env = {**os.environ, "MY_KEY": "sk-from-env"}
    named = run_cli("+recipe=openai", "prompt.api_key_env=MY_KEY", f"prompt.base_url={model_server}",
                    f"home={home}", "mode=validate", cwd=tmp_path, env=env)
    assert named.returncode == 0, named.stderr
    assert "sk-from-env" not in named.stdout + named.stderr
