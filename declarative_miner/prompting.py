"""The seed's request type, `Prompting`, and the caller's identity every request carries."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import MalformedBody

# What can make a lone surrogate in what json.loads returns: an escape (\uD800-\uDFFF) or the bytes
# UTF-8 would spell one with (json.loads decodes bytes with "surrogatepass").
SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


@dataclass
class TerminalInfo:
    """Who sent a request. `hotkey` is the *verified* signer once authentication has passed."""

    hotkey: Optional[str] = None
    ip: Optional[str] = None
    nonce: Optional[int] = None


@dataclass
class Prompting:
    """The seed's request: a chat (`roles` paired with `messages`) to be answered in `completion`.

    `dendrite` names the caller, as on a bittensor 10 synapse, so seed-style code that reads
    `synapse.dendrite.hotkey` keeps working.
    """

    roles: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    completion: str = ""
    dendrite: TerminalInfo = field(default_factory=TerminalInfo)

    def chat(self, system_prompt: Optional[str] = None) -> list[dict[str, str]]:
        """The request as chat-template messages, `system_prompt` first unless a system message leads."""
        return chat_of(self, system_prompt)

    def check(self) -> None:
        """What the declared field types cannot say: a chat is roles paired with messages."""
        if not self.messages:
            raise MalformedBody("'messages' must hold at least one message")
        if len(self.roles) != len(self.messages):
            raise MalformedBody(f"'roles' has {len(self.roles)} entries but 'messages' has {len(self.messages)}")


def chat_of(request: Any, system_prompt: Optional[str] = None) -> list[dict[str, str]]:
    """Any request with `roles` and `messages` (the seed's Prompting, or a type declared with them) as
    chat-template messages, `system_prompt` first unless a system message leads."""
    chat = [{"role": role, "content": text} for role, text in zip(request.roles, request.messages)]
    if system_prompt and (not chat or chat[0]["role"] != "system"):
        chat.insert(0, {"role": "system", "content": system_prompt})
    return chat


def json_default(value: Any) -> Any:
    """What JSON makes of what it has no form for: bytes as base64 text (as field_types' bytes)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def decode_json(raw: bytes) -> dict:
    """The JSON object in a request body, or `MalformedBody` saying what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError: non-UTF-8 bodies land here too.
        raise MalformedBody(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedBody("body must be a JSON object of the request's fields")
    if SURROGATE.search(raw):
        for key, value in body.items():
            _require_unicode([key, value], key)
    return body


def decode_signed(raw: bytes, signer: TerminalInfo) -> dict:
    """`decode_json` for a body whose signature has checked out: a malformed one is refused as its
    verified signer's doing (`MalformedBody.signer`), not an unverified stranger's."""
    try:
        return decode_json(raw)
    except MalformedBody as exc:
        exc.signer = signer.hotkey
        raise


def _require_unicode(value: Any, key: str) -> None:
    """`MalformedBody` naming `key` if `value` holds a lone surrogate anywhere (valid JSON escapes, such as
    "\\ud800", but not text anything can encode). A loop, not recursion: json.loads takes nesting
    nearly as deep as the interpreter's recursion limit."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise MalformedBody(f"'{key}' holds a lone surrogate, which is not valid Unicode text") from None
        elif isinstance(value, dict):
            pending.extend(value)  # its keys
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
