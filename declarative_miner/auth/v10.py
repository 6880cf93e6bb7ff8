"""The bittensor 10 Axon/Dendrite wire protocol, on bittensor 11 primitives (protocols.md §1).

A v10 Dendrite signs `{nonce}.{dendrite_hotkey}.{axon_hotkey}.{uuid}.{body_hash}` with its hotkey
and sends the hash it signed as `computed_body_hash`. Unlike the v10 Axon, this verifier checks the
signature over the headers before it parses a byte of the body (a forged request costs one
signature check), then recomputes the hash from the body (a tampered body is a 401 with a reason,
never a 500); freshness comes from the signed nonce alone, on every request (never from the
unsigned version or timeout headers); any nonce not seen within the window is accepted, in any
order, so a burst delivered out of order is served; and the policies and the prompt get the
*signed* hotkey.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Callable, Mapping, Optional

from bittensor.sp_core import CRYPTO_SR25519
from bittensor.sp_core import verify as sr25519_verify

from ..errors import NotAuthenticated, RequestError
from ..prompting import TerminalInfo, decode_json
from .freshness import check_fresh, parse_number
from ..identity import identity

CLAIMED_HOTKEY = "bt_header_dendrite_hotkey"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what HTTP forbids in a header value (tab is allowed)


def body_hash(body: Mapping, fields: tuple[str, ...]) -> str:
    """`Synapse.body_hash`: sha3-256 over the sha3-256 of each of the synapse's
    `required_hash_fields` as Python `str()` prints it (no fields: the hash of nothing)."""
    inner = "".join(hashlib.sha3_256(str(body.get(f)).encode()).hexdigest() for f in fields)
    return hashlib.sha3_256(inner.encode()).hexdigest()


class V10Auth:
    """Verifies v10 Dendrite requests addressed to `self_hotkey`.

    Args:
        max_age: seconds a signed nonce stays fresh; allowed_skew: seconds it may lie ahead.
        nonce_store: the replay store (`check_and_store`, `fence_ns`), shared with btauth/1.
        clock: nanoseconds since the epoch; injectable to verify recorded requests.
    """

    name = "v10"

    def __init__(self, self_hotkey: str, *, max_age: float, allowed_skew: float, nonce_store,
                 clock: Callable[[], int] = time.time_ns):
        self.self_hotkey, self.max_age, self.allowed_skew = self_hotkey, max_age, allowed_skew
        self.nonce_store, self.clock = nonce_store, clock

    @staticmethod
    def claims(headers: Mapping[str, str]) -> bool:
        return CLAIMED_HOTKEY in headers

    @staticmethod
    def claimed_hotkey(headers: Mapping[str, str]) -> Optional[str]:
        return headers.get(CLAIMED_HOTKEY)

    @staticmethod
    def signature(headers: Mapping[str, str]) -> str:
        return headers.get("bt_header_dendrite_signature", "")

    def before_body(self, headers: Mapping[str, str], *, ip: Optional[str]) -> tuple[TerminalInfo, str]:
        """The whole signature is over the headers: a forged request is refused before its body is read."""
        return self.verify(headers, ip=ip)

    def authenticate(self, headers: Mapping[str, str], raw: bytes, *, method: str, path: str,
                     ip: Optional[str], early: tuple[TerminalInfo, str],
                     hash_fields: tuple[str, ...]) -> tuple[TerminalInfo, dict]:
        """The caller `before_body` verified and the decoded body, whose hash over `hash_fields`
        (what the synapse integrity-protects) must be the signed one."""
        caller, signed_hash = early
        body = decode_json(raw)  # text only: a lone surrogate, which the hash could not encode, is refused there
        if body_hash(body, hash_fields) != signed_hash:
            raise NotAuthenticated("body hash mismatch: the body is not the one that was signed")
        return caller, body

    def verify(self, headers: Mapping[str, str], *, ip: Optional[str]) -> tuple[TerminalInfo, str]:
        """The verified caller and the body hash it signed, from the headers alone, or
        `NotAuthenticated` saying what failed. Records the nonce: a second call is a replay."""
        hotkey, uuid = headers.get(CLAIMED_HOTKEY, ""), headers.get("bt_header_dendrite_uuid", "")
        try:
            nonce = parse_number(headers["bt_header_dendrite_nonce"], "bt_header_dendrite_nonce")
            signature = bytes.fromhex(headers["bt_header_dendrite_signature"].removeprefix("0x"))
            signed_hash = headers["computed_body_hash"]
        except KeyError as missing:
            raise NotAuthenticated(f"missing header {missing.args[0]}") from None
        except ValueError as exc:
            raise NotAuthenticated(f"malformed nonce or signature header ({exc})") from None
        if not _HEX64.fullmatch(signed_hash):
            raise NotAuthenticated("malformed computed_body_hash header: expected 64 lowercase hex digits")
        check_fresh(nonce, self.clock(), max_age=self.max_age, allowed_skew=self.allowed_skew,
                    fence_ns=self.nonce_store.fence_ns)
        message = f"{nonce}.{hotkey}.{self.self_hotkey}.{uuid}.{signed_hash}".encode()
        try:
            valid = sr25519_verify(message, signature, hotkey, CRYPTO_SR25519)
        except ValueError:
            raise NotAuthenticated("invalid hotkey address or signature encoding") from None
        if not valid:
            raise NotAuthenticated("signature mismatch: not signed by this hotkey for this miner and body")
        if not self.nonce_store.check_and_store(f"v10:{identity(hotkey)}:{uuid}", nonce):
            raise NotAuthenticated("replayed request: this nonce was already used")
        return TerminalInfo(hotkey=identity(hotkey), ip=ip, nonce=nonce), signed_hash

    def success(self, reply: dict, body: dict, process_time: float) -> tuple[dict, dict]:
        """The reply a v10 Dendrite reads as success: the whole synapse, its outputs filled."""
        axon = {**(body.get("axon") or {}), "status_code": 200, "status_message": "Success",
                "process_time": process_time, "hotkey": self.self_hotkey}
        return {**body, **reply, "axon": axon}, _status_headers(200, "Success", process_time)

    def stream_headers(self) -> list[tuple[bytes, bytes]]:
        headers = {"content-type": "text/event-stream", **_status_headers(200, "Success"),
                   "bt_header_axon_hotkey": self.self_hotkey}
        return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]

    @staticmethod
    def frame(chunk: str) -> bytes:
        """Raw text: v10 stream readers append each non-empty line of a chunk to `completion`."""
        return chunk.encode()

    @staticmethod
    def final(completion: str) -> bytes:
        return b""

    @staticmethod
    def stream_error(error: RequestError) -> bytes:
        return b""  # the status is already sent and v10 readers have no error frame

    @staticmethod
    def failure(error: RequestError) -> tuple[dict, dict]:
        """`{"message": ...}` and the status headers a v10 Dendrite maps onto its synapse."""
        message = f"{error.error}: {error.reason}"
        return {"message": message}, {**_status_headers(error.status, message), **error.headers}


def _status_headers(status: int, message: str, process_time: Optional[float] = None) -> dict[str, str]:
    # A reason may quote what the caller sent; a header value must be latin-1 without control characters.
    safe = _CONTROL.sub("?", message.encode("latin-1", "replace").decode("latin-1"))
    headers = {"bt_header_axon_status_code": str(status), "bt_header_axon_status_message": safe}
    if process_time is not None:
        headers["bt_header_axon_process_time"] = repr(process_time)
    return headers


def sign(keypair, *, receiver: str, roles: list[str], messages: list[str], uuid: str,
         nonce: Optional[int] = None, timeout: float = 12.0) -> tuple[dict[str, str], bytes]:
    """Headers and body of a v10 Dendrite's `Prompting` request, made with a bittensor 11 keypair."""
    return sign_synapse(keypair, receiver=receiver, name="Prompting", uuid=uuid, nonce=nonce, timeout=timeout,
                        fields={"roles": roles, "messages": messages, "completion": ""},
                        hash_fields=("messages",))  # what the seed's `Prompting` integrity-protects


def sign_synapse(keypair, *, receiver: str, name: str, fields: dict, hash_fields: tuple[str, ...], uuid: str,
                 nonce: Optional[int] = None, timeout: float = 12.0) -> tuple[dict[str, str], bytes]:
    """Headers and body of a v10 Dendrite's request of synapse `name` carrying `fields`, whose
    `required_hash_fields` are `hash_fields`, made with a bittensor 11 keypair."""
    nonce = time.time_ns() if nonce is None else nonce
    body = {"name": name, "timeout": timeout, **fields,
            "dendrite": {"hotkey": keypair.ss58_address, "nonce": nonce, "uuid": uuid, "version": 10005000},
            "axon": {"hotkey": receiver}}
    digest = body_hash(body, tuple(hash_fields))
    signature = keypair.sign(f"{nonce}.{keypair.ss58_address}.{receiver}.{uuid}.{digest}".encode())
    # As `Synapse.to_headers()` writes them: the input_obj headers are empty dummies a v10 Axon
    # needs to parse the request from its headers.
    dummies = {f"bt_header_input_obj_{field}": "W10=" for field, value in fields.items() if isinstance(value, list)}
    headers = {"name": name, "timeout": str(timeout), "bt_header_axon_hotkey": receiver, **dummies,
               "bt_header_dendrite_hotkey": keypair.ss58_address, "bt_header_dendrite_nonce": str(nonce),
               "bt_header_dendrite_uuid": uuid, "bt_header_dendrite_version": "10005000",
               "bt_header_dendrite_signature": "0x" + bytes(signature).hex(), "computed_body_hash": digest,
               "content-type": "application/json"}
    return headers, json.dumps(body).encode()
