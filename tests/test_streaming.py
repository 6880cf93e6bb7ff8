"""`POST /StreamPrompting`: chunks as the prompt yields them, for btauth/1 and v10 callers."""

from __future__ import annotations

import httpx


def test_btauth_callers_get_each_chunk_then_the_whole_completion(make_miner, client_for):
    with make_miner() as miner:
        reply = client_for(miner).stream(["say one two three"])
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
    assert reply.chunks == ["say", " one", " two", " three"]
    assert reply.completion == "say one two three"


def test_v10_callers_get_raw_text_chunks_with_v10_status_headers(make_miner, client_for):
    with make_miner() as miner:
        reply = client_for(miner).stream(["alpha beta"], wire_format="v10")
    assert (reply.status, reply.completion) == (200, "alpha beta")
    assert reply.headers["bt_header_axon_status_code"] == "200"


def test_an_async_generator_prompt_streams(make_miner, client_for):
    with make_miner("prompt._target_=tests.prompts.async_words") as miner:
        reply = client_for(miner).stream(["a b c"])
    assert reply.chunks == ["a\n", "b\n", "c\n"]


def test_a_duplicate_stream_is_refused_before_any_chunk_and_cached_streams_reuse(make_miner, client_for, tmp_path):
    with make_miner() as miner:
        client = client_for(miner)
        assert client.stream(["once only"]).status == 200
        again = client.stream(["once only"])
        assert (again.status, again.error, again.chunks) == (409, "duplicate prompt", [])
        assert client.prompt(["once only"]).status == 409  # one cache for both routes
    # A prompt that answers differently each call: only the cache can make the repeats agree.
    with make_miner("cache.on_hit=reuse", "prompt._target_=tests.prompts.counting",
                    f"+prompt.path={tmp_path / 'calls'}") as miner:
        client = client_for(miner)
        assert client.stream(["twice"]).chunks == ["call 1"]
        assert client.stream(["twice"]).chunks == ["call 1"]  # the stream is replayed from the cache
        assert client.prompt(["twice"]).completion == "call 1"
        assert client.stream(["new"]).chunks == ["call 2"]


def test_a_prompt_failing_mid_stream_ends_it_with_an_error_event_and_the_miner_keeps_serving(make_miner, client_for):
    with make_miner("prompt._target_=tests.prompts.fails_midway") as miner:
        client = client_for(miner)
        reply = client.stream(["x"])
        assert reply.chunks == ["first "]
        assert (reply.status, reply.reason) == (500, "RuntimeError: lost the model")
        assert client.stream(["x"]).chunks == ["first "]  # not a duplicate: the failure was forgotten
        assert httpx.get(f"http://127.0.0.1:{miner.port}/health").status_code == 200


def test_the_non_streaming_route_joins_a_streaming_prompt(make_miner, client_for):
    with make_miner() as miner:
        assert client_for(miner).prompt(["joined back up"]).completion == "joined back up"
