"""The v10 wire protocol on recorded real Dendrite bytes, and over the wire with the v10 client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from declarative_miner.errors import MalformedBody, NotAuthenticated
from declarative_miner.state.memory import MemoryNonces
from declarative_miner.auth.v10 import V10Auth, body_hash

WIRE = Path(__file__).parent / "data" / "v10_wire"
PROMPTING_HASH = ("messages",)  # the recorded synapse's required_hash_fields
MINER, VALIDATOR = "5F4dcZYbDiSiU1yiUDCBjvxbfEo1f9PQwQqSa9wktzx7SYDr", "5DodD7WMgbyG9hqFdAkqkgqEBZJCDwhkg4ih8Sr6fvsZT9KJ"


def recorded() -> tuple[dict, bytes]:
    """Headers (lower-cased, as an ASGI server gives them) and body of a real Dendrite request."""
    head, _, body = (WIRE / "ok.request.bin").read_bytes().partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


class Verifier(V10Auth):
    """`before_body` then `authenticate`, as the app calls them."""

    def authenticate(self, headers, raw, *, method, path, ip):
        return super().authenticate(headers, raw, method=method, path=path, ip=ip,
                                    early=self.before_body(headers, ip=ip), hash_fields=PROMPTING_HASH)


def auth(at_seconds_after_nonce: float = 1.0, receiver: str = MINER, store=None) -> V10Auth:
    headers, _ = recorded()
    nonce = int(headers["bt_header_dendrite_nonce"])
    return Verifier(receiver, max_age=10.0, allowed_skew=2.0, nonce_store=store or MemoryNonces(13.0, 0.0),
                   clock=lambda: nonce + int(at_seconds_after_nonce * 1e9))


def test_a_recorded_dendrite_request_verifies_and_yields_the_signed_caller():
    headers, raw = recorded()
    caller, body = auth().authenticate(headers, raw, method="POST", path="/Prompting", ip="127.0.0.1")
    assert (caller.hotkey, caller.ip) == (VALIDATOR, "127.0.0.1")
    assert body_hash(body, PROMPTING_HASH) == headers["computed_body_hash"]


def test_a_replayed_recorded_request_is_refused():
    headers, raw = recorded()
    verifier = auth()
    verifier.authenticate(headers, raw, method="POST", path="/Prompting", ip=None)
    with pytest.raises(NotAuthenticated, match="replayed request: this nonce was already used"):
        verifier.authenticate(headers, raw, method="POST", path="/Prompting", ip=None)


@pytest.mark.parametrize("edit, reason", [
    (lambda h, b: (h, b.replace(b"hello wire", b"hello wirf")), "body hash mismatch"),
    (lambda h, b: ({**h, "computed_body_hash": body_hash(json.loads(b.replace(b"hello wire", b"hello wirf")), PROMPTING_HASH)},
                   b.replace(b"hello wire", b"hello wirf")), "signature mismatch"),
    (lambda h, b: ({**h, "bt_header_dendrite_signature": "0x" + "00" * 64}, b), "signature mismatch"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "bt_header_dendrite_nonce"}, b), "missing header"),
    (lambda h, b: ({**h, "bt_header_dendrite_nonce": "soon"}, b), "must be a decimal number"),
])
def test_tampering_is_a_401_with_a_reason_not_a_500(edit, reason):
    headers, raw = edit(*recorded())
    with pytest.raises(NotAuthenticated, match=reason):
        auth().authenticate(headers, raw, method="POST", path="/Prompting", ip=None)


def test_a_request_signed_for_another_miner_fails_as_a_signature_mismatch():
    headers, raw = recorded()
    with pytest.raises(NotAuthenticated, match="signature mismatch"):
        auth(receiver=VALIDATOR).authenticate(headers, raw, method="POST", path="/Prompting", ip=None)


def test_a_nonce_older_than_max_age_is_stale_and_a_future_one_too():
    headers, raw = recorded()
    with pytest.raises(NotAuthenticated, match="stale request: signed 11.00 s ago, more than 10 s"):
        auth(at_seconds_after_nonce=11).authenticate(headers, raw, method="POST", path="/Prompting", ip=None)
    with pytest.raises(NotAuthenticated, match="in the future"):
        auth(at_seconds_after_nonce=-3).authenticate(headers, raw, method="POST", path="/Prompting", ip=None)


def test_the_body_cannot_claim_another_hotkey():
    headers, raw = recorded()
    spoofed = raw.replace(f'"hotkey": "{VALIDATOR}"'.encode(), b'"hotkey": "SPOOFED-IN-BODY"')
    assert spoofed != raw
    caller, body = auth().authenticate(headers, spoofed, method="POST", path="/Prompting", ip=None)
    assert caller.hotkey == VALIDATOR and body["dendrite"]["hotkey"] == "SPOOFED-IN-BODY"


@pytest.mark.parametrize("unsigned", [{"bt_header_dendrite_version": "0"}, {"bt_header_dendrite_version": None},
                                      {"timeout": "1000000"}, {"bt_header_dendrite_uuid": "fresh-uuid"}])
def test_unsigned_headers_never_make_an_old_request_fresh(unsigned):
    """Version and timeout are not signed: an hour-old request is stale whatever they say (and a
    new uuid breaks the signature, since the uuid is signed)."""
    headers, raw = recorded()
    headers = {k: v for k, v in {**headers, **unsigned}.items() if v is not None}
    with pytest.raises(NotAuthenticated, match="stale request|signature mismatch"):
        auth(at_seconds_after_nonce=3600).authenticate(headers, raw, method="POST", path="/Prompting", ip=None)


def test_a_forgotten_nonce_is_as_safe_as_a_remembered_one():
    """The store forgets a nonce only once it is past the freshness window, where it is stale anyway."""
    headers, raw = recorded()
    store = MemoryNonces(0.0, 0.0)  # forgets at once
    auth(store=store).authenticate(headers, raw, method="POST", path="/Prompting", ip=None)
    with pytest.raises(NotAuthenticated, match="stale request"):
        auth(at_seconds_after_nonce=11, store=store).authenticate(
            {**headers, "bt_header_dendrite_version": "0"}, raw, method="POST", path="/Prompting", ip=None)


def test_nonces_out_of_order_are_each_accepted_once():
    """A burst from one Dendrite may arrive out of nonce order: every unseen nonce is served."""
    store = MemoryNonces(13.0, 0.0)
    assert store.check_and_store("v10:hk:uuid", 30) and store.check_and_store("v10:hk:uuid", 10)
    assert store.check_and_store("v10:hk:uuid", 20)
    assert not store.check_and_store("v10:hk:uuid", 10) and not store.check_and_store("v10:hk:uuid", 30)


def test_the_signature_is_checked_before_the_body_is_parsed():
    headers, raw = recorded()
    forged = {**headers, "bt_header_dendrite_signature": "0x" + "00" * 64}
    with pytest.raises(NotAuthenticated, match="signature mismatch"):
        auth().authenticate(forged, b"{not json at all", method="POST", path="/Prompting", ip=None)
    with pytest.raises(NotAuthenticated, match="missing header computed_body_hash"):
        auth().authenticate({k: v for k, v in headers.items() if k != "computed_body_hash"}, raw,
                            method="POST", path="/Prompting", ip=None)


def test_the_client_speaks_v10_and_the_pipeline_treats_it_like_btauth(make_miner, client_for):
    with make_miner() as miner:
        client = client_for(miner)
        ok = client.prompt(["hello v10"], wire_format="v10")
        duplicate = client.prompt(["hello v10"], wire_format="v10")
        stranger = client_for(miner, "stranger").prompt(["who"], wire_format="v10")
    assert (ok.status, ok.completion, ok.headers["bt_header_axon_status_code"]) == (200, "hello v10", "200")
    assert duplicate.status == 409 and duplicate.headers["bt_header_axon_status_code"] == "409"
    assert (stranger.status, stranger.reason) == (403, "blacklisted: registered: hotkey is not registered on netuid 1")


def test_a_refusal_quoting_control_characters_still_makes_valid_headers():
    """A reason may quote the caller; uvicorn refuses a header value with control characters and
    the caller would get no answer at all."""
    from declarative_miner.auth.v10 import V10Auth

    payload, headers = V10Auth.failure(NotAuthenticated("bad \n nonce \x00 \x7f"))
    assert payload["message"] == "authentication failed: bad \n nonce \x00 \x7f"  # the body keeps it (JSON escapes it)
    assert headers["bt_header_axon_status_message"] == "authentication failed: bad ? nonce ? ?"


def test_the_reply_to_the_recorded_request_has_the_shape_the_stock_axon_gave_it():
    """ok.response.bin is a stock 10.5.0 Axon's answer to ok.request.bin; ok.dendrite_view.json is
    what the Dendrite made of it. Ours must carry the same fields and read the same way."""
    headers, raw = recorded()
    verifier = auth()
    _, body = verifier.authenticate(headers, raw, method="POST", path="/Prompting", ip=None)
    reply, reply_headers = verifier.success(
        {"roles": body["roles"], "messages": body["messages"], "completion": "hello wire"}, body, 0.001)
    stock = json.loads((WIRE / "ok.response.bin").read_bytes().partition(b"\r\n\r\n")[2])
    view = json.loads((WIRE / "ok.dendrite_view.json").read_text())
    assert set(reply) == set(stock) and set(reply["axon"]) == set(stock["axon"])
    fields = ("name", "timeout", "roles", "messages", "completion")
    assert {k: reply[k] for k in fields} == {k: stock[k] for k in fields}
    assert reply["axon"]["status_code"] == stock["axon"]["status_code"] == view["dendrite"]["status_code"]
    assert (reply_headers["bt_header_axon_status_code"], reply_headers["bt_header_axon_status_message"]) == (
        str(view["dendrite"]["status_code"]), view["dendrite"]["status_message"])
    assert view["completion"] == reply["completion"]


def test_a_signed_field_holding_a_lone_surrogate_is_malformed_not_a_crash():
    """The body hash needs the signed fields' text; the recorded request, its message swapped for an
    escaped lone surrogate, is refused as malformed (422) before any hash is computed."""
    headers, raw = recorded()
    forged = raw.replace(b"hello wire", b"\\ud800")
    assert forged != raw
    with pytest.raises(MalformedBody, match="'messages' holds a lone surrogate"):
        auth().authenticate(headers, forged, method="POST", path="/Prompting", ip=None)
