"""Epistula v2 callers, and replies signed for any caller to check, tested as strangers do.

The Epistula client below is written from the spec (protocols.md §6: headers, the signed message
`{sha256(body)}.{uuid}.{timestamp_ms}.{signed_for}`, the secret signatures some stacks add), with
a bittensor Keypair to sign: none of the project's code. Signed replies are checked as README
specifies btreply/1, with bittensor's sr25519 verification alone.
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

from .test_open_internet import connect, read_response

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
    # Epistula signs a timestamp, not a nonce, and the refusal says which clock to look at
    assert reasons["future"][1].startswith(("the Epistula-Timestamp is 60.", "the Epistula-Timestamp is 59."))
    assert "axon.allowed_skew" in reasons["future"][1]
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
            status, _, answer = read_response(sock)
    assert status == 401
    assert b"stale request" in answer


def test_a_wire_format_left_out_of_axon_wire_formats_is_refused_naming_the_list(make_miner, hotkeys):
    body = json.dumps(MESSAGES).encode()
    with make_miner("axon.wire_formats=[btauth,v10]") as miner:
        reply = post(miner, "/Prompting", body, epistula(hotkeys["dev-validator"], body, miner.hotkey))
    assert (reply.status_code, reply.json()["reason"]) == (
        401, "the epistula wire format is not accepted here (axon.wire_formats: btauth, v10)")


def _signed_btauth(miner, hotkey, route: str, body: bytes) -> httpx.Response:
    headers = http_auth.sign(hotkey, method="POST", path=route, body=body, receiver_ss58=miner.hotkey)
    return post(miner, route, body, {**headers, "content-type": "application/json"})


def reply_verifies(reply: httpx.Response, *, method: str, target: str, miner: str, caller: str,
                   request_signature: str) -> bool:
    """btreply/1 checked as README specifies it, with bittensor's sr25519 alone (not the project's code)."""
    from bittensor.sp_core import CRYPTO_SR25519
    from bittensor.sp_core import verify

    h = reply.headers
    if h.get("x-bittensor-reply-version") != "btreply/1":
        return False
    payload = "\n".join(["btreply/1", method, target, hashlib.sha256(reply.content).hexdigest(),
                         h["x-bittensor-reply-nonce"], miner, caller, request_signature.lower().removeprefix("0x")])
    return verify(payload.encode(), bytes.fromhex(h["x-bittensor-reply-signature"][2:]), miner, CRYPTO_SR25519)


def test_a_signed_reply_names_its_request_and_is_never_a_request(make_miner, hotkeys):
    """Signed replies are a scheme of their own (#signing oracle): no btauth/1 verifier accepts one as
    a request, a reply to one request does not pass as the reply to another, and nobody unverified
    gets the miner's signature on anything."""
    from .test_open_internet import read_response, request_bytes

    validator, body = hotkeys["dev-validator"], json.dumps(MESSAGES).encode()
    with make_miner("axon.sign_responses=true", "cache.ttl=0") as miner:
        first_headers = http_auth.sign(validator, method="POST", path="/Prompting", body=body,
                                       receiver_ss58=miner.hotkey)
        served = post(miner, "/Prompting", body, first_headers)
        second_headers = http_auth.sign(validator, method="POST", path="/Prompting", body=body,
                                        receiver_ss58=miner.hotkey)
        second = post(miner, "/Prompting", body, second_headers)
        epistula_headers = epistula(validator, b'{"roles": ["user"], "messages": ["e"]}', miner.hotkey)
        epistula_reply = post(miner, "/Prompting", b'{"roles": ["user"], "messages": ["e"]}', epistula_headers)
        refused = _signed_btauth(miner, hotkeys["stranger"], "/Prompting", body)  # 403: never verified
        with connect(miner.port) as sock:  # an anonymous attacker asking for a signed "transfer"
            sock.sendall(request_bytes("DELETE", "/admin/transfer?to=ATTACKER&amount=1000", {}))
            oracle_status, oracle_headers, _ = read_response(sock)
    me = validator.ss58_address
    assert served.status_code == 200 and reply_verifies(served, method="POST", target="/Prompting", miner=miner.hotkey,
                                                        caller=me, request_signature=first_headers["X-Bittensor-Signature"])
    assert not reply_verifies(served, method="POST", target="/Prompting", miner=miner.hotkey, caller=me,
                              request_signature=second_headers["X-Bittensor-Signature"])  # not request 2's reply
    assert reply_verifies(second, method="POST", target="/Prompting", miner=miner.hotkey, caller=me,
                          request_signature=second_headers["X-Bittensor-Signature"])
    assert reply_verifies(epistula_reply, method="POST", target="/Prompting", miner=miner.hotkey, caller=me,
                          request_signature=epistula_headers["Epistula-Request-Signature"])
    # Posed as a btauth/1 request from the miner, with the reply's own signature and nonce: refused.
    h = served.headers
    as_request = {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": miner.hotkey,
                  "X-Bittensor-Nonce": h["x-bittensor-reply-nonce"], "X-Bittensor-Signature": h["x-bittensor-reply-signature"]}
    with pytest.raises(http_auth.AuthError):
        http_auth.verify(served.headers, served.content, method="POST", path="/Prompting", self_hotkey_ss58=me,
                         require_receiver=False)
    with pytest.raises(http_auth.BadSignature):
        http_auth.verify(as_request, served.content, method="POST", path="/Prompting", self_hotkey_ss58=me,
                         require_receiver=False)
    for unsigned in (refused.headers, oracle_headers):
        assert not any(k.lower().startswith("x-bittensor-reply") for k in unsigned), unsigned
    assert refused.status_code == 403 and oracle_status == 404


def test_replies_are_unsigned_by_default(make_miner, hotkeys):
    body = json.dumps(MESSAGES).encode()
    with make_miner() as miner:
        reply = _signed_btauth(miner, hotkeys["dev-validator"], "/Prompting", body)
    assert reply.status_code == 200 and "x-bittensor-reply-signature" not in reply.headers
