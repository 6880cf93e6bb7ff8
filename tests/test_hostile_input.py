"""Hostile input: random requests of every shape get a 4xx with a reason; nothing crashes or hangs."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings

from .asgi import Lifespan
from .fuzzing import cases, raw_requests, send_case, send_raw, signed, signed_cases, statuses_of


@pytest.fixture(scope="module")
def app_loop(tmp_path_factory, wallets_dir, hotkeys):
    from declarative_miner.config import compose
    from declarative_miner.miner import Miner

    home = tmp_path_factory.mktemp("fuzz-home")
    (home / "dev").mkdir()
    (home / "dev" / "wallets").symlink_to(wallets_dir)
    # Every case comes from one address, hundreds of refusals a second: shedding it (429, tests/test_shedding.py)
    # would hide what each body gets.
    miner = Miner(compose([f"home={home}", "blacklist=open", "axon.request_timeout=2",
                           "axon.max_refusals_per_ip=0", "metrics.port=null"]))
    app, loop = miner.asgi_app(), asyncio.new_event_loop()
    lifespan = Lifespan(app)
    loop.run_until_complete(lifespan.__aenter__())
    yield app, loop
    loop.run_until_complete(lifespan.__aexit__())
    loop.close()
    miner.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases)
def test_random_requests_never_get_a_5xx_and_every_refusal_says_why(app_loop, case):
    app, loop = app_loop
    status, body = loop.run_until_complete(send_case(app, case))
    assert status < 500, (status, body)
    if status != 200:
        reason = body.get("reason") or body.get("message")
        assert isinstance(reason, str) and reason, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=signed_cases)
def test_signed_requests_with_hostile_bodies_are_refused_with_a_reason_or_served(app_loop, hotkeys, case):
    app, loop = app_loop
    protocol, payload = case
    status, body = loop.run_until_complete(send_case(app, signed(protocol, payload, hotkeys["dev-validator"],
                                                                 hotkeys["dev-miner"].ss58_address)))
    assert status < 500, (status, body)
    assert status in (200, 409, 413, 422), (status, body)
    if status != 200:
        assert body.get("reason") or body.get("message"), body


@pytest.fixture(scope="module")
def served(tmp_path_factory, wallets_dir):
    """A real miner on a real port; one per module, so the fuzz cases share it."""
    from declarative_miner.config import compose
    from declarative_miner.miner import Miner

    home = tmp_path_factory.mktemp("raw-fuzz-home")
    (home / "dev").mkdir()
    (home / "dev" / "wallets").symlink_to(wallets_dir)
    miner = Miner(compose([f"home={home}", "axon.port=0", "metrics.port=0", "blacklist=open", "axon.request_timeout=1",
                           "axon.max_body_bytes=300000"]))
    with miner:
        yield miner
    miner.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=raw_requests)
def test_raw_bytes_through_the_real_server_never_get_a_5xx(served, raw):
    """Through uvicorn and the guarded protocol: request lines, headers, encodings and bodies."""
    answer = send_raw(served.port, raw)
    statuses = statuses_of(answer)
    assert all(status < 500 for status in statuses), answer[:500]
    if statuses and statuses[0] >= 400 and not raw.startswith(b"HEAD "):  # HEAD answers carry no body
        assert answer.partition(b"\r\n\r\n")[2], answer[:500]  # a refusal carries its reason
    assert statuses_of(send_raw(served.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
