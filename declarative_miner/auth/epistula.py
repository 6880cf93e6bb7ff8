"""Epistula v2 (protocols.md §6), the signing scheme of Targon-style and SN19-style stacks.

The sender signs `{sha256(raw body)}.{uuid}.{timestamp_ms}.{signed_for}` with its sr25519 hotkey
and sends it as `Epistula-Request-Signature`. Here the headers' shape, the receiver and the
freshness of the signed timestamp are checked before the body is read; the signature needs the
body's hash, so it is checked next, before the body is parsed. Each uuid is served once per
sender within the freshness window (the replay store every wire format shares). The optional
`Epistula-Secret-Signature-*` headers (a rotating shared secret some stacks use) are not read.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid as uuids
from typing import Callable, Mapping, Optional

from bittensor.sp_core import CRYPTO_SR25519
from bittensor.sp_core import verify as sr25519_verify

from ..errors import NotAuthenticated
from ..prompting import TerminalInfo, decode_signed
from .freshness import check_fresh, parse_number
from ..identity import claimed_identity, identity
from .replies import JsonReplies

VERSION, TIMESTAMP, UUID = "epistula-version", "epistula-timestamp", "epistula-uuid"
SIGNED_BY, SIGNED_FOR, SIGNATURE = "epistula-signed-by", "epistula-signed-for", "epistula-request-signature"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(0x)?[0-9a-fA-F]{128}")


class EpistulaAuth(JsonReplies):
    """Verifies Epistula v2 requests addressed to `self_hotkey`.

    Args:
        max_age, allowed_skew: seconds the signed timestamp may lie behind or ahead.
        require_receiver: refuse requests without `Epistula-Signed-For`.
        nonce_store: the replay store shared with the other wire formats.
        clock: nanoseconds since the epoch.
    """

    name = "epistula"

    def __init__(self, self_hotkey: str, *, max_age: float, allowed_skew: float, require_receiver: bool,
                 nonce_store, clock: Callable[[], int] = time.time_ns):
        self.self_hotkey, self.max_age, self.allowed_skew = self_hotkey, max_age, allowed_skew
        self.require_receiver, self.nonce_store, self.clock = require_receiver, nonce_store, clock

    @staticmethod
    def claims(headers: Mapping[str, str]) -> bool:
        return VERSION in headers or SIGNED_BY in headers

    @staticmethod
    def claimed_hotkey(headers: Mapping[str, str]) -> Optional[str]:
        return headers.get(SIGNED_BY)

    @staticmethod
    def signature(headers: Mapping[str, str]) -> str:
        return headers.get(SIGNATURE, "")

    def before_body(self, headers: Mapping[str, str], *, ip: Optional[str]) -> int:
        """Shape, receiver and freshness, from the headers alone; returns the timestamp (ms)."""
        if headers.get(VERSION) != "2":
            raise NotAuthenticated(f"Epistula-Version must be 2 (got {headers.get(VERSION)!r})")
        for name in (TIMESTAMP, UUID, SIGNATURE):
            if name not in headers:
                raise NotAuthenticated(f"missing header {name}")
        stamp, uuid = parse_number(headers[TIMESTAMP], "Epistula-Timestamp (milliseconds)"), headers[UUID]
        if not _UUID.fullmatch(uuid):
            raise NotAuthenticated("Epistula-Uuid must be a uuid (36 characters)")
        if not _HEX.fullmatch(headers[SIGNATURE]):
            raise NotAuthenticated("Epistula-Request-Signature must be 0x and 128 hex digits")
        receiver = headers.get(SIGNED_FOR, "")
        if receiver and claimed_identity(receiver) != identity(self.self_hotkey):
            raise NotAuthenticated(f"signed for {receiver}, not for this miner ({self.self_hotkey})")
        if not receiver and self.require_receiver:
            raise NotAuthenticated("Epistula-Signed-For is missing: sign the request for this miner's hotkey "
                                   f"({self.self_hotkey}); the miner's operator can admit unbound requests with "
                                   "axon.require_receiver=false")
        check_fresh(stamp * 1_000_000, self.clock(), max_age=self.max_age, allowed_skew=self.allowed_skew,
                    fence_ns=self.nonce_store.fence_ns, what="Epistula-Timestamp")
        return stamp

    def authenticate(self, headers: Mapping[str, str], raw: bytes, *, method: str, path: str, ip: Optional[str],
                     early: int, hash_fields: tuple[str, ...] = ()) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body. The signature covers the raw body's sha256,
        so every field is protected and `hash_fields` mean nothing here."""
        hotkey, uuid = headers[SIGNED_BY], headers[UUID]
        message = f"{hashlib.sha256(raw).hexdigest()}.{uuid}.{headers[TIMESTAMP]}.{headers.get(SIGNED_FOR, '')}"
        signature = bytes.fromhex(headers[SIGNATURE].removeprefix("0x"))
        try:
            valid = sr25519_verify(message.encode(), signature, hotkey, CRYPTO_SR25519)
        except ValueError:
            raise NotAuthenticated("invalid Epistula-Signed-By address") from None
        if not valid:
            raise NotAuthenticated("signature mismatch: not signed by this hotkey for this body, uuid and timestamp")
        # Signed-By is not signed: the uuid is kept by the signer's key, which no re-spelling changes.
        if not self.nonce_store.check_and_store(f"epistula:{identity(hotkey)}", uuid.lower()):
            raise NotAuthenticated("replayed request: this Epistula-Uuid was already used")
        caller = TerminalInfo(hotkey=identity(hotkey), ip=ip, nonce=early * 1_000_000)
        return caller, decode_signed(raw, caller)


def sign(keypair, body: bytes, receiver: Optional[str], *, uuid: Optional[str] = None,
         timestamp_ms: Optional[int] = None) -> dict[str, str]:
    """Epistula v2 headers for `body`, signed by `keypair` for `receiver` (what a validator's
    client sends; the miner's own verifier never calls this)."""
    uuid = uuid or str(uuids.uuid4())
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    message = f"{hashlib.sha256(body).hexdigest()}.{uuid}.{stamp}.{receiver or ''}"
    headers = {"Epistula-Version": "2", "Epistula-Timestamp": str(stamp), "Epistula-Uuid": uuid,
               "Epistula-Signed-By": keypair.ss58_address,
               "Epistula-Request-Signature": "0x" + bytes(keypair.sign(message.encode())).hex(),
               "content-type": "application/json"}
    if receiver:
        headers["Epistula-Signed-For"] = receiver
    return headers
