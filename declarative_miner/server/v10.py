"""The bittensor 10 Axon/Dendrite wire protocol, on bittensor 11 primitives (protocols.md §1).

A v10 Dendrite signs `{nonce}.{dendrite_hotkey}.{axon_hotkey}.{uuid}.{body_hash}` with its hotkey.
Unlike the v10 Axon, this verifier recomputes the body hash from the body itself (a tampered
body is a 401 with a reason, never a 500), records a nonce only after everything verified, keeps
its nonce store bounded, and hands the policies and the prompt the *signed* hotkey.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Callable, Mapping, Optional

from bittensor.sp_core import CRYPTO_SR25519
from bittensor.sp_core import verify as sr25519_verify

from ..errors import MalformedBody, NotAuthenticated, RequestError
from ..protocol import Prompting, TerminalInfo, decode_json

CLAIMED_HOTKEY = "bt_header_dendrite_hotkey"
REQUIRED_HASH_FIELDS = ("messages",)  # what the v10 `Prompting` synapse integrity-protects
ALLOWED_DELTA = 4.0  # seconds: the v10 Axon's slack on a first nonce, on top of the timeout
MAX_TIMEOUT = 60.0  # seconds: a client's `timeout` header widens freshness no further than this
V7_2_0 = 7002000  # Dendrites from this version on get the first-nonce freshness check


def body_hash(body: Mapping, fields: tuple[str, ...] = REQUIRED_HASH_FIELDS) -> str:
    """`Synapse.body_hash`: sha3-256 over the sha3-256 of each field's Python `str()`."""
    inner = "".join(hashlib.sha3_256(str(body.get(f)).encode()).hexdigest() for f in fields)
    return hashlib.sha3_256(inner.encode()).hexdigest()


class NonceLedger:
    """Last accepted nonce per (hotkey, uuid), forgotten after `retention` seconds.

    Forgetting is safe: a forgotten key's next nonce must pass the first-nonce freshness check,
    and `retention` outlasts the widest freshness window (`ALLOWED_DELTA + MAX_TIMEOUT`).
    """

    def __init__(self, retention: float = ALLOWED_DELTA + MAX_TIMEOUT + 1.0):
        self.retention = retention
        self._last: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def last(self, key: str) -> Optional[int]:
        entry = self._last.get(key)
        return entry[0] if entry else None

    def accept(self, key: str, nonce: int) -> bool:
        """Record `nonce` if it is newer than the last one for `key`; False for a replay."""
        now = time.monotonic()
        with self._lock:
            while self._last and next(iter(self._last.values()))[1] < now - self.retention:
                self._last.popitem(last=False)
            previous = self._last.get(key)
            if previous is not None and nonce <= previous[0]:
                return False
            self._last[key] = (nonce, now)
            self._last.move_to_end(key)
            return True


class V10Auth:
    """Verifies v10 Dendrite requests addressed to `self_hotkey`."""

    protocol = "v10"

    def __init__(self, self_hotkey: str, *, allowed_skew: float, ledger: Optional[NonceLedger] = None,
                 clock: Callable[[], int] = time.time_ns):
        self.self_hotkey, self.allowed_skew = self_hotkey, allowed_skew
        self.ledger = ledger or NonceLedger()
        self.clock = clock  # nanoseconds; injectable to verify recorded requests

    @staticmethod
    def claimed_hotkey(headers: Mapping[str, str]) -> Optional[str]:
        return headers.get(CLAIMED_HOTKEY)

    def authenticate(self, headers: Mapping[str, str], raw: bytes, *, method: str, path: str,
                     ip: Optional[str]) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body (which the signed hash is computed from)."""
        body = decode_json(raw)
        try:
            return self.verify(headers, body, ip=ip), body
        except UnicodeEncodeError:  # the hash needs the fields' text; lone surrogates have none
            raise MalformedBody("the signed fields hold a lone surrogate, which is not valid Unicode text") from None

    def verify(self, headers: Mapping[str, str], body: dict, *, ip: Optional[str]) -> TerminalInfo:
        """The verified caller, or `NotAuthenticated` saying what failed."""
        hotkey, uuid = headers.get(CLAIMED_HOTKEY, ""), headers.get("bt_header_dendrite_uuid", "")
        try:
            nonce = int(headers["bt_header_dendrite_nonce"])
            signature = bytes.fromhex(headers["bt_header_dendrite_signature"].removeprefix("0x"))
            version = int(headers.get("bt_header_dendrite_version", "0"))
            timeout = min(MAX_TIMEOUT, float(headers.get("timeout", "12")))
        except KeyError as missing:
            raise NotAuthenticated(f"missing header {missing.args[0]}") from None
        except ValueError as exc:
            raise NotAuthenticated(f"malformed nonce, signature, version or timeout header ({exc})") from None
        computed = body_hash(body)
        if headers.get("computed_body_hash", computed) != computed:
            raise NotAuthenticated("body hash mismatch: the body is not the one that was signed")
        now = self.clock()
        if nonce - now > self.allowed_skew * 1e9:
            raise NotAuthenticated(f"nonce is more than {self.allowed_skew:g} s in the future")
        key = f"{hotkey}:{uuid}"
        last = self.ledger.last(key)
        if last is None and version >= V7_2_0 and nonce <= now - (ALLOWED_DELTA + timeout) * 1e9:
            raise NotAuthenticated(f"nonce is too old: acceptable delta is {ALLOWED_DELTA + timeout:.2f} seconds "
                                   f"but request was {(now - nonce) / 1e9:.2f} seconds old")
        if last is not None and nonce <= last:
            raise NotAuthenticated("nonce is too old, a newer one was last processed")
        message = f"{nonce}.{hotkey}.{self.self_hotkey}.{uuid}.{computed}".encode()
        try:
            valid = sr25519_verify(message, signature, hotkey, CRYPTO_SR25519)
        except ValueError:
            raise NotAuthenticated("invalid hotkey address or signature encoding") from None
        if not valid:
            raise NotAuthenticated("signature mismatch: not signed by this hotkey for this miner and body")
        if not self.ledger.accept(key, nonce):
            raise NotAuthenticated("nonce is too old, a newer one was last processed")
        return TerminalInfo(hotkey=hotkey, ip=ip, nonce=nonce)

    def success(self, request: Prompting, body: dict, process_time: float) -> tuple[dict, dict]:
        """The reply a v10 Dendrite reads as success: the whole synapse with `completion`."""
        axon = {**(body.get("axon") or {}), "status_code": 200, "status_message": "Success",
                "process_time": process_time, "hotkey": self.self_hotkey}
        return {**body, "completion": request.completion, "axon": axon}, _status_headers(200, "Success", process_time)

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
    headers = {"bt_header_axon_status_code": str(status),
               "bt_header_axon_status_message": message.encode("latin-1", "replace").decode("latin-1")}
    if process_time is not None:
        headers["bt_header_axon_process_time"] = repr(process_time)
    return headers


def sign(keypair, *, receiver: str, roles: list[str], messages: list[str], uuid: str,
         nonce: Optional[int] = None, timeout: float = 12.0) -> tuple[dict[str, str], bytes]:
    """Headers and body of a v10 Dendrite request, made with a bittensor 11 keypair."""
    nonce = time.time_ns() if nonce is None else nonce
    body = {"name": "Prompting", "timeout": timeout, "roles": roles, "messages": messages, "completion": "",
            "dendrite": {"hotkey": keypair.ss58_address, "nonce": nonce, "uuid": uuid, "version": 10005000},
            "axon": {"hotkey": receiver}}
    digest = body_hash(body)
    signature = keypair.sign(f"{nonce}.{keypair.ss58_address}.{receiver}.{uuid}.{digest}".encode())
    # As `Synapse.to_headers()` writes them: the input_obj headers are empty dummies a v10 Axon
    # needs to parse the request from its headers.
    headers = {"name": "Prompting", "timeout": str(timeout), "bt_header_axon_hotkey": receiver,
               "bt_header_input_obj_roles": "W10=", "bt_header_input_obj_messages": "W10=",
               "bt_header_dendrite_hotkey": keypair.ss58_address, "bt_header_dendrite_nonce": str(nonce),
               "bt_header_dendrite_uuid": uuid, "bt_header_dendrite_version": "10005000",
               "bt_header_dendrite_signature": "0x" + bytes(signature).hex(), "computed_body_hash": digest,
               "content-type": "application/json"}
    return headers, json.dumps(body).encode()
