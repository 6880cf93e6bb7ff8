"""The pipeline's rules in process: the miner's ASGI app driven through httpx.ASGITransport, as
Starlette and httpx test apps (no socket, no server): the fast tier. Requests are signed by bittensor
11's own `http_auth`, by the Epistula client written from the spec and as a v10 Dendrite signs."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from bittensor import http_auth

from declarative_miner.auth.reply_signature import verify_reply
from declarative_miner.config import compose
from declarative_miner.miner import Miner

from .asgi import Lifespan
from .test_epistula import epistula
from .test_open_internet import v10_request


@pytest.fixture
def ask(home, hotkeys):
    """`ask(*overrides)` -> an async function sending requests to a miner built from `overrides`."""
    built = []

    def make(*overrides: str):
        miner = Miner(compose([f"home={home}", "metrics.port=null", *overrides]))
        built.append(miner)
        return miner

    yield make
    for miner in built:
        miner.close()


async def _serving(miner, work, client=("127.0.0.1", 50000)):
    app = miner.asgi_app()
    async with Lifespan(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://miner") as http:
            return await work(http)


def _btauth(hotkeys, miner, words: str, who: str = "dev-validator", path: str = "/Prompting"):
    body = json.dumps({"roles": ["user"], "messages": [words]}).encode()
    return body, http_auth.sign(hotkeys[who], method="POST", path=path, body=body, receiver_ss58=miner.hotkey)


def test_each_rule_in_order_with_its_status_and_reason(ask, hotkeys):
    miner = ask("+blacklist.rules.rate_limit={requests: 3}")

    async def work(http):
        replies = {}
        body, headers = _btauth(hotkeys, miner, "hello")
        replies["served"] = await http.post("/Prompting", content=body, headers=headers)
        replies["replayed"] = await http.post("/Prompting", content=body, headers=headers)
        replies["duplicate"] = await http.post("/Prompting", content=body,
                                               headers=_btauth(hotkeys, miner, "hello")[1])
        replies["unsigned"] = await http.post("/Prompting", content=body)
        replies["stranger"] = await http.post("/Prompting", content=body,
                                              headers=_btauth(hotkeys, miner, "hello", "stranger")[1])
        replies["too large"] = await http.post("/Prompting", content=b"{}", headers={**headers,
                                                                                     "content-length": str(10**9)})
        bad = b'{"roles": ["user"], "messages": "not a list"}'
        replies["malformed"] = await http.post("/Prompting", content=bad, headers=http_auth.sign(
            hotkeys["dev-validator"], method="POST", path="/Prompting", body=bad, receiver_ss58=miner.hotkey))
        replies["rate limited"] = await http.post("/Prompting", content=_btauth(hotkeys, miner, "fourth")[0],
                                                  headers=_btauth(hotkeys, miner, "fourth")[1])
        replies["no route"] = await http.get("/nowhere")
        replies["health"] = await http.get("/health")
        return replies

    r = asyncio.run(_serving(miner, work))
    assert (r["served"].status_code, r["served"].json()["completion"]) == (200, "hello")
    assert (r["replayed"].status_code, r["replayed"].json()["reason"].split(":")[0]) == (401, "ReplayedRequest")
    assert r["duplicate"].status_code == 409
    assert r["unsigned"].status_code == 401 and "carries no hotkey header" in r["unsigned"].json()["reason"]
    assert r["stranger"].json() == {"error": "blacklisted", "reason": "registered: hotkey is not registered on netuid 1"}
    assert r["too large"].status_code == 413
    assert r["malformed"].status_code == 422 and "'messages': should be a list" in r["malformed"].json()["reason"]
    assert r["rate limited"].status_code == 429 and r["rate limited"].headers["retry-after"]
    assert r["no route"].status_code == 404 and "POST /Prompting" in r["no route"].json()["reason"]
    assert r["health"].json()["status"] == "ok" and "pid" not in r["health"].json()


def test_every_wire_format_is_served_and_streams(ask, hotkeys):
    miner = ask("cache.ttl=0")

    async def work(http):
        v10_headers, v10_body = v10_request(hotkeys["dev-validator"], miner.hotkey, ["in v10"], nonce=__import__("time").time_ns())
        body = json.dumps({"roles": ["user"], "messages": ["in epistula"]}).encode()
        stream_body, stream_headers = _btauth(hotkeys, miner, "one two three", path="/StreamPrompting")
        return (await http.post("/Prompting", content=v10_body, headers=v10_headers),
                await http.post("/Prompting", content=body, headers=epistula(hotkeys["dev-validator"], body, miner.hotkey)),
                await http.post("/StreamPrompting", content=stream_body, headers=stream_headers))

    v10, epi, streamed = asyncio.run(_serving(miner, work))
    assert v10.status_code == 200 and v10.json()["completion"] == "in v10"
    assert v10.headers["bt_header_axon_status_code"] == "200"
    assert epi.status_code == 200 and epi.json()["completion"] == "in epistula"
    assert 'event: done\ndata: {"completion": "one two three"}' in streamed.text


def test_replies_are_signed_for_verified_callers_only(ask, hotkeys):
    miner = ask("axon.sign_responses=true")

    async def work(http):
        body, headers = _btauth(hotkeys, miner, "sign this")
        return (headers, await http.post("/Prompting", content=body, headers=headers),
                await http.post("/Prompting", content=body))

    headers, signed, unsigned = asyncio.run(_serving(miner, work))
    assert verify_reply(signed.headers, signed.content, method="POST", target="/Prompting", miner=miner.hotkey,
                        caller=hotkeys["dev-validator"].ss58_address,
                        request_signature=headers["X-Bittensor-Signature"])
    assert unsigned.status_code == 401 and "x-bittensor-reply-signature" not in unsigned.headers


def test_a_flooding_address_is_refused_while_shed_and_others_are_served(ask, hotkeys):
    """In process there is no socket to pause: the app itself refuses a shed caller (429), as behind a proxy."""
    miner = ask("axon.max_refusals_per_ip=5", "axon.shed_for=30", "axon.trusted_proxies=[127.0.0.1]")

    async def work(http):
        flood = [(await http.post("/Prompting", content=b"{}", headers={"x-forwarded-for": "10.0.0.66"})).status_code
                 for _ in range(8)]
        body, headers = _btauth(hotkeys, miner, "still served")
        served = await http.post("/Prompting", content=body, headers={**headers, "x-forwarded-for": "10.0.0.1"})
        return flood, served

    flood, served = asyncio.run(_serving(miner, work))
    assert flood[:6] == [401] * 6 and set(flood[6:]) == {429}
    assert served.status_code == 200
