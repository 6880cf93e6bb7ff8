"""Epistula v2 callers, and replies signed for any caller to check, tested as strangers do.

The Epistula client below is written from the spec (protocols.md §6: headers, the signed message
`{sha256(body)}.{uuid}.{timestamp_ms}.{signed_for}`, the secret signatures some stacks add), with
a bittensor Keypair to sign: none of the project's code. Signed replies are checked with
bittensor 11's `http_auth.verify` alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid as uuids

import httpx
import pytest
from bittensor import http_auth

from .test_open_internet import connect

MESSAGES = {"roles": ["user"], "messages": ["hello epistula"]}


def epistula(keypair, body: bytes, signed_for: str | None, *, uuid: str | None = None,
             timestamp_ms: int | None = None) -> dict[str, str]:
    """Epistula v2 request headers, as a Targon-style sender writes them."""
    uuid = uuid or str(uuids.uuid4())
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    message = f"{hashlib.sha256(body).hexdigest()}.{uuid}.{timestamp_ms}.{signed_for or ''}"
    headers = {"Epistula-Version": "2", "Epistula-Timestamp": str(timestamp_ms), "Epistula-Uuid": uuid,
               "Epistula-Signed-By": keypair.ss58_address,
               "Epistula-Request-Signature": "0x" + bytes(keypair.sign(message.encode())).hex(),
               "Content-Type": "application/json"}
    if signed_for:
        headers["Epistula-Signed-For"] = signed_for
        interval = math.ceil(timestamp_ms / 1e4) * 1e4
        for k in range(3):  # the rotating secret: ignored by the miner, sent by some stacks
            secret = keypair.sign(f"{interval + k - 1}.{signed_for}".encode())
            headers[f"Epistula-Secret-Signature-{k}"] = "0x" + bytes(secret).hex()
    return headers


def post(miner, route: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{miner.port}{route}", content=body, headers=headers, timeout=10)


def test_an_epistula_caller_is_served_plain_and_streamed(make_miner, hotkeys):
    validator = hotkeys["dev-validator"]
    body = json.dumps(MESSAGES).encode()
    with make_miner() as miner:
        plain = post(miner, "/Prompting", body, epistula(validator, body, miner.hotkey))
        streamed_body = json.dumps({"roles": ["user"], "messages": ["one two"]}).encode()
        streamed = post(miner, "/StreamPrompting", streamed_body, epistula(validator, streamed_body, miner.hotkey))
    assert (plain.status_code, plain.json()["completion"]) == (200, "hello epistula")
    assert streamed.status_code == 200 and 'event: done\ndata: {"completion": "one two"}' in streamed.text


def test_epistula_replays_stale_stamps_wrong_receivers_and_tampered_bodies_get_401_with_reasons(
        make_miner, hotkeys):
    validator, body = hotkeys["dev-validator"], json.dumps(MESSAGES).encode()
    with make_miner() as miner:
        first = epistula(validator, body, miner.hotkey)
        served = post(miner, "/Prompting", body, first)
        refused = {
            "replay": post(miner, "/Prompting", body, first),
            "uuid reused, newly signed": post(miner, "/Prompting", body,
                                              epistula(validator, body, miner.hotkey, uuid=first["Epistula-Uuid"])),
            "stale": post(miner, "/Prompting", body, epistula(validator, body, miner.hotkey,
                                                              timestamp_ms=int(time.time() * 1000) - 20_000)),
            "future": post(miner, "/Prompting", body, epistula(validator, body, miner.hotkey,
                                                               timestamp_ms=int(time.time() * 1000) + 60_000)),
            "other receiver": post(miner, "/Prompting", body, epistula(validator, body, hotkeys["stranger"].ss58_address)),
            "unbound": post(miner, "/Prompting", body, epistula(validator, body, None)),
            "tampered": post(miner, "/Prompting", body.replace(b"hello", b"jello"),
                             epistula(validator, body, miner.hotkey)),
            "version 1": post(miner, "/Prompting", body, {**epistula(validator, body, miner.hotkey),
                                                          "Epistula-Version": "1"}),
        }
        still = post(miner, "/Prompting", b'{"roles": ["user"], "messages": ["still here"]}',
                     epistula(validator, b'{"roles": ["user"], "messages": ["still here"]}', miner.hotkey))
    assert served.status_code == 200 and still.status_code == 200
    reasons = {name: (reply.status_code, reply.json()["reason"]) for name, reply in refused.items()}
    assert reasons == {
        "replay": (401, "replayed request: this Epistula-Uuid was already used"),
        "uuid reused, newly signed": (401, "replayed request: this Epistula-Uuid was already used"),
        "stale": (401, reasons["stale"][1]),
        "future": (401, reasons["future"][1]),
        "other receiver": (401, f"signed for {hotkeys['stranger'].ss58_address}, not for this miner ({miner.hotkey})"),
        "unbound": (401, reasons["unbound"][1]),
        "tampered": (401, "signature mismatch: not signed by this hotkey for this body, uuid and timestamp"),
        "version 1": (401, "Epistula-Version must be 2 (got '1')"),
    }
    assert reasons["stale"][1].startswith("stale request: signed 20.")
    assert reasons["future"][1].startswith("the nonce is 60.") or reasons["future"][1].startswith("the nonce is 59.")
    assert "axon.require_receiver=false" in reasons["unbound"][1]


def test_unbound_epistula_requests_are_served_when_the_operator_allows_them(make_miner, hotkeys):
    body = json.dumps(MESSAGES).encode()
    with make_miner("axon.require_receiver=false") as miner:
        reply = post(miner, "/Prompting", body, epistula(hotkeys["dev-validator"], body, None))
    assert reply.status_code == 200


def test_a_forged_epistula_claim_from_another_address_is_refused_before_its_body_is_read(make_miner, hotkeys):
    """Raw bytes from 127.0.0.2: a stale claim in the validator's name, its body never sent."""
    body = json.dumps(MESSAGES).encode()
    with make_miner() as miner:
        headers = epistula(hotkeys["dev-validator"], body, miner.hotkey, timestamp_ms=1)
        lines = ["POST /Prompting HTTP/1.1", "Host: miner", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        with connect(miner.port) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())  # headers only: the body is withheld
            answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 401")
    assert "stale request" in answer


def test_a_wire_format_left_out_of_axon_wire_formats_is_refused_naming_the_list(make_miner, hotkeys):
    body = json.dumps(MESSAGES).encode()
    with make_miner("axon.wire_formats=[btauth,v10]") as miner:
        reply = post(miner, "/Prompting", body, epistula(hotkeys["dev-validator"], body, miner.hotkey))
    assert (reply.status_code, reply.json()["reason"]) == (
        401, "the epistula wire format is not accepted here (axon.wire_formats: btauth, v10)")


def _signed_btauth(miner, hotkey, route: str, body: bytes) -> httpx.Response:
    headers = http_auth.sign(hotkey, method="POST", path=route, body=body, receiver_ss58=miner.hotkey)
    return post(miner, route, body, {**headers, "content-type": "application/json"})


def test_signed_replies_verify_with_bittensor_11_alone(make_miner, hotkeys):
    validator, body = hotkeys["dev-validator"], json.dumps(MESSAGES).encode()
    with make_miner("axon.sign_responses=true") as miner:
        served = _signed_btauth(miner, validator, "/Prompting", body)
        refused = _signed_btauth(miner, hotkeys["stranger"], "/Prompting", body)
        epistula_reply = post(miner, "/Prompting", b'{"roles": ["user"], "messages": ["e"]}',
                              epistula(validator, b'{"roles": ["user"], "messages": ["e"]}', miner.hotkey))
    store = http_auth.InMemoryNonceStore()
    signer = http_auth.verify(served.headers, served.content, method="POST", path="/Prompting",
                              self_hotkey_ss58=validator.ss58_address, nonce_store=store)
    assert (served.status_code, signer.hotkey_ss58) == (200, miner.hotkey)
    with pytest.raises(http_auth.BadSignature):  # the body is what was signed
        http_auth.verify(served.headers, served.content.replace(b"hello", b"jello"), method="POST",
                         path="/Prompting", self_hotkey_ss58=validator.ss58_address, nonce_store=store)
    # A refusal before verification is signed too, bound to nobody: the caller was never proven.
    refusal = http_auth.verify(refused.headers, refused.content, method="POST", path="/Prompting",
                               self_hotkey_ss58=hotkeys["stranger"].ss58_address, require_receiver=False,
                               nonce_store=store)
    assert (refused.status_code, refusal.hotkey_ss58) == (403, miner.hotkey)
    signed_for_epistula = http_auth.verify(epistula_reply.headers, epistula_reply.content, method="POST",
                                           path="/Prompting", self_hotkey_ss58=validator.ss58_address,
                                           nonce_store=store)
    assert signed_for_epistula.hotkey_ss58 == miner.hotkey


def test_replies_are_unsigned_by_default(make_miner, hotkeys):
    body = json.dumps(MESSAGES).encode()
    with make_miner() as miner:
        reply = _signed_btauth(miner, hotkeys["dev-validator"], "/Prompting", body)
    assert reply.status_code == 200 and http_auth.HEADER_SIGNATURE.lower() not in reply.headers
