"""btauth/1 authentication (bittensor 11's `http_auth`), with the window the config declares."""

from __future__ import annotations

from typing import Mapping, Optional

from bittensor import http_auth

from ..errors import NotAuthenticated
from ..prompting import TerminalInfo, decode_signed
from .replay import check_fence
from .replies import JsonReplies

CLAIMED_HOTKEY = http_auth.HEADER_HOTKEY.lower()


class BtAuth(JsonReplies):
    """Verifies btauth/1 requests addressed to `self_hotkey`.

    Replays are caught by a nonce store (server/replay.py) that keeps every accepted nonce at
    least as long as the freshness window (`max_age + allowed_skew`), as `http_auth.verify` requires.
    """

    name = "btauth"

    def __init__(self, self_hotkey: str, *, max_age: float, allowed_skew: float,
                 require_receiver: bool, nonce_store):
        self.self_hotkey = self_hotkey
        self.max_age, self.allowed_skew, self.require_receiver = max_age, allowed_skew, require_receiver
        self.nonce_store = nonce_store

    @staticmethod
    def claims(headers: Mapping[str, str]) -> bool:
        return CLAIMED_HOTKEY in headers

    @staticmethod
    def claimed_hotkey(headers: Mapping[str, str]) -> Optional[str]:
        """The hotkey a request says it comes from, before anything is verified."""
        return headers.get(CLAIMED_HOTKEY)

    @staticmethod
    def before_body(headers: Mapping[str, str], *, ip: Optional[str]) -> None:
        """Nothing to verify yet: btauth/1 signs the body's hash, so the body comes first."""
        return None

    def authenticate(self, headers: Mapping[str, str], raw: bytes, *, method: str, path: str,
                     ip: Optional[str], early: None = None,
                     hash_fields: tuple[str, ...] = ()) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body; the signature (over the raw body's hash,
        so every field is covered and `hash_fields` mean nothing here) is checked before parsing."""
        caller = self.verify(headers, raw, method=method, path=path, ip=ip)
        return caller, decode_signed(raw, caller)

    def verify(self, headers: Mapping[str, str], body: bytes, *, method: str, path: str,
               ip: Optional[str]) -> TerminalInfo:
        """The verified caller, or `NotAuthenticated` with the reason."""
        nonce = headers.get(http_auth.HEADER_NONCE.lower(), "")
        if nonce.isascii() and nonce.isdigit():  # int() would refuse other digits, such as ²
            check_fence(int(nonce), self.nonce_store.fence_ns)
        try:
            caller = http_auth.verify(
                headers, body, method=method, path=path, self_hotkey_ss58=self.self_hotkey,
                max_age=self.max_age, allowed_skew=self.allowed_skew,
                require_receiver=self.require_receiver, nonce_store=self.nonce_store,
            )
        except http_auth.WrongReceiver as exc:
            unbound = http_auth.HEADER_RECEIVER.lower() not in {k.lower() for k in headers}
            hint = "; the miner's operator can admit such requests with axon.require_receiver=false" if unbound else ""
            raise NotAuthenticated(f"WrongReceiver: {exc}{hint}") from None
        except http_auth.AuthError as exc:
            raise NotAuthenticated(f"{type(exc).__name__}: {exc}") from None
        return TerminalInfo(hotkey=caller.hotkey_ss58, ip=ip, nonce=caller.nonce_ns)
