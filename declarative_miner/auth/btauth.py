"""btauth/1 authentication (bittensor 11's `http_auth`), with the window the config declares."""

from __future__ import annotations

from typing import Mapping, Optional

from bittensor import http_auth

from ..errors import NotAuthenticated
from ..prompting import TerminalInfo, decode_signed
from .freshness import check_fence, parse_number
from ..identity import identity
from .replies import JsonReplies

CLAIMED_HOTKEY = http_auth.HEADER_HOTKEY.lower()
_NONCE, _RECEIVER = http_auth.HEADER_NONCE.lower(), http_auth.HEADER_RECEIVER.lower()


class _ByKey:
    """The replay store as `http_auth.verify` calls it, keyed by the signer's key, not its spelling."""

    def __init__(self, store):
        self.store, self.retention = store, store.retention

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        return self.store.check_and_store(f"btauth:{identity(hotkey_ss58)}", nonce_ns)


class BtAuth(JsonReplies):
    """Verifies btauth/1 requests addressed to `self_hotkey`.

    Replays are caught by the replay store (state/), which keeps every accepted nonce at least as
    long as the freshness window (`max_age + allowed_skew`), as `http_auth.verify` requires.
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
    def signature(headers: Mapping[str, str]) -> str:
        """The request's signature as sent: what a signed reply names as the request it answers."""
        return headers.get(http_auth.HEADER_SIGNATURE.lower(), "")

    def before_body(self, headers: Mapping[str, str], *, ip: Optional[str]) -> None:
        """The nonce's shape, from the headers (the signature covers the body, so it comes later)."""
        check_fence(parse_number(headers.get(_NONCE, ""), "X-Bittensor-Nonce"), self.nonce_store.fence_ns)

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
        receiver = headers.get(_RECEIVER)
        try:  # another spelling of this miner's key is this miner
            me = receiver if receiver and identity(receiver) == identity(self.self_hotkey) else self.self_hotkey
        except ValueError:
            me = self.self_hotkey
        try:
            caller = http_auth.verify(
                headers, body, method=method, path=path, self_hotkey_ss58=me,
                max_age=self.max_age, allowed_skew=self.allowed_skew,
                require_receiver=self.require_receiver, nonce_store=_ByKey(self.nonce_store),
            )
        except http_auth.WrongReceiver as exc:
            hint = "; the miner's operator can admit such requests with axon.require_receiver=false" \
                if receiver is None else ""
            raise NotAuthenticated(f"WrongReceiver: {exc}{hint}") from None
        except http_auth.AuthError as exc:
            raise NotAuthenticated(f"{type(exc).__name__}: {exc}") from None
        return TerminalInfo(hotkey=identity(caller.hotkey_ss58), ip=ip, nonce=caller.nonce_ns)
