"""btreply/1: the miner's signature on a reply, a scheme of its own.

A reply is signed over a payload no request scheme shares: its first line is `btreply/1`, so no
btauth/1, v10 or Epistula verifier ever accepts it as a request. It names the request it answers by
that request's signature, so a reply to one request never passes as the reply to another. Only replies
to verified callers are signed: an anonymous caller gets no signature from the miner, on anything.

Payload (UTF-8), lines joined by "\\n":

    btreply/1
    METHOD                 of the request, upper case
    TARGET                 the request's path and query, as sent
    sha256(reply body)     lower-case hex
    NONCE                  nanoseconds since the epoch when the reply was signed
    MINER                  the miner's hotkey (SS58)
    CALLER                 the verified caller's hotkey (SS58, generic prefix 42)
    REQUEST SIGNATURE      the request's signature: lower-case hex, no 0x

Headers: `X-Bittensor-Reply-Version: btreply/1`, `-Reply-Hotkey` (MINER), `-Reply-Nonce`, `-Reply-To`
(CALLER) and `-Reply-Signature` (0x and the sr25519 signature in hex).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Mapping, Optional

from bittensor.sp_core import CRYPTO_SR25519
from bittensor.sp_core import verify as sr25519_verify

VERSION = "btreply/1"
HEADER_VERSION, HEADER_HOTKEY = "X-Bittensor-Reply-Version", "X-Bittensor-Reply-Hotkey"
HEADER_NONCE, HEADER_TO, HEADER_SIGNATURE = "X-Bittensor-Reply-Nonce", "X-Bittensor-Reply-To", \
    "X-Bittensor-Reply-Signature"


def _hex(signature: str) -> str:
    return signature.strip().lower().removeprefix("0x")


def payload(*, method: str, target: str, body: bytes, nonce_ns: int, miner: str, caller: str,
            request_signature: str) -> bytes:
    """The bytes a reply's signature covers (see the module's docstring)."""
    return "\n".join([VERSION, method.upper(), target, hashlib.sha256(body).hexdigest(), str(nonce_ns), miner,
                      caller, _hex(request_signature)]).encode()


class ReplySigner:
    """Signs replies with the miner's hotkey (a bittensor `Keypair`)."""

    def __init__(self, keypair: Any):
        self.keypair, self.hotkey = keypair, keypair.ss58_address

    def __call__(self, *, method: str, target: str, body: bytes, caller: str, request_signature: str) -> dict[str, str]:
        nonce = time.time_ns()
        signature = self.keypair.sign(payload(method=method, target=target, body=body, nonce_ns=nonce,
                                              miner=self.hotkey, caller=caller, request_signature=request_signature))
        return {HEADER_VERSION: VERSION, HEADER_HOTKEY: self.hotkey, HEADER_NONCE: str(nonce), HEADER_TO: caller,
                HEADER_SIGNATURE: "0x" + bytes(signature).hex()}


def verify_reply(headers: Mapping[str, str], body: bytes, *, method: str, target: str, miner: str, caller: str,
                 request_signature: str, max_age: Optional[float] = 60.0) -> bool:
    """Whether `body` and `headers` are `miner`'s signed reply to the request `caller` signed with
    `request_signature` (sent as `method target`), signed within `max_age` seconds (None: any time)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get(HEADER_VERSION.lower()) != VERSION or lowered.get(HEADER_HOTKEY.lower()) != miner:
        return False
    try:
        nonce = int(lowered.get(HEADER_NONCE.lower(), ""))
        signature = bytes.fromhex(_hex(lowered.get(HEADER_SIGNATURE.lower(), "")))
    except ValueError:
        return False
    if max_age is not None and abs(time.time_ns() - nonce) > max_age * 1e9:
        return False
    signed = payload(method=method, target=target, body=body, nonce_ns=nonce, miner=miner, caller=caller,
                     request_signature=request_signature)
    try:
        return sr25519_verify(signed, signature, miner, CRYPTO_SR25519)
    except ValueError:
        return False
