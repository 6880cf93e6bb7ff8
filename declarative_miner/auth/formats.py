"""Wire formats: how a request is signed and how its answer is framed, one plug-in each.

Today: btauth/1 (bittensor 11, `btauth.py`), the bittensor 10 Axon/Dendrite format (`v10.py`) and
Epistula v2 (`epistula.py`). Each request is read in the format its headers claim; a request
claiming none is read as btauth/1, whose refusal says what is missing. `axon.wire_formats` lists
the formats accepted; a request in another is refused (401) in its own format, naming the list.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, Sequence

from ..errors import NotAuthenticated, RequestError
from ..prompting import TerminalInfo
from .btauth import BtAuth
from .epistula import EpistulaAuth
from .v10 import V10Auth



class WireFormat(Protocol):
    """What the request path asks of a wire format, in the order it asks."""

    name: str  # as `axon.wire_formats` and the metrics name it

    def claims(self, headers: Mapping[str, str]) -> bool:
        """Whether the request's headers are in this format (nothing verified)."""

    def claimed_hotkey(self, headers: Mapping[str, str]) -> Optional[str]:
        """The hotkey the request says signed it: what the blacklist sees before any check."""

    def signature(self, headers: Mapping[str, str]) -> str:
        """The request's signature as sent, which a signed reply names as the request it answers."""

    def before_body(self, headers: Mapping[str, str], *, ip: Optional[str]) -> Any:
        """Every check the headers alone allow (refusing before the body is read); the result
        is handed to `authenticate` as `early`."""

    def authenticate(self, headers: Mapping[str, str], raw: bytes, *, method: str, path: str, ip: Optional[str],
                     early: Any, hash_fields: tuple[str, ...]) -> tuple[TerminalInfo, dict]:
        """The verified caller and the decoded body, or `NotAuthenticated` with the reason.
        `hash_fields` are the fields a format that signs chosen fields (v10) must cover."""

    def success(self, reply: dict, body: dict, process_time: float) -> tuple[dict, dict]:
        """The JSON answer and extra headers for `reply` (the request's fields, outputs filled)."""

    def failure(self, error: RequestError) -> tuple[dict, dict]:
        """The JSON answer and extra headers for a refusal."""

    def stream_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers that open a streamed answer."""

    def frame(self, chunk: str) -> bytes:
        """One chunk of a streamed answer."""

    def final(self, completion: str) -> bytes:
        """What closes a streamed answer (the whole text, for formats that repeat it)."""

    def stream_error(self, error: RequestError) -> bytes:
        """What ends a stream that failed after its status was sent."""


class WireFormats:
    """Picks each request's format from its headers, refusing the ones not accepted.

    Args:
        formats: every format this miner can read, the default (btauth/1) last.
        accepted: the names `axon.wire_formats` lists.
    """

    def __init__(self, formats: Sequence[WireFormat], accepted: Sequence[str]):
        self.formats, self.accepted = list(formats), set(accepted)
        self.default = self.formats[-1]

    def of(self, headers: Mapping[str, str]) -> WireFormat:
        """The format `headers` claim (the default when they claim none)."""
        return next((f for f in self.formats if f.claims(headers)), self.default)

    def require_accepted(self, wire: WireFormat) -> None:
        if wire.name not in self.accepted:
            raise NotAuthenticated(f"the {wire.name} wire format is not accepted here (axon.wire_formats: "
                                   f"{', '.join(sorted(self.accepted))})")


def open_wire_formats(self_hotkey: str, *, accepted: Sequence[str], max_age: float, allowed_skew: float,
                      require_receiver: bool, nonce_store) -> WireFormats:
    """Every format, verifying requests addressed to `self_hotkey` within one freshness window
    (`max_age`, `allowed_skew`) against one replay store."""
    window = {"max_age": max_age, "allowed_skew": allowed_skew, "nonce_store": nonce_store}
    return WireFormats([V10Auth(self_hotkey, **window),
                        EpistulaAuth(self_hotkey, require_receiver=require_receiver, **window),
                        BtAuth(self_hotkey, require_receiver=require_receiver, **window)], accepted)
