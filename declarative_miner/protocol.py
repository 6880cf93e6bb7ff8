"""The request type the miner serves, and how a request body becomes one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from .errors import MalformedBody


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
        chat = [{"role": role, "content": text} for role, text in zip(self.roles, self.messages)]
        if system_prompt and (not chat or chat[0]["role"] != "system"):
            chat.insert(0, {"role": "system", "content": system_prompt})
        return chat

    def inputs(self) -> dict:
        """The fields a caller fills: what was asked."""
        return {"roles": self.roles, "messages": self.messages}

    def to_json(self) -> dict:
        return {"roles": self.roles, "messages": self.messages, "completion": self.completion}


def _string_list(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedBody(f"'{key}' must be a list of strings")
    for item in value:
        if not item.isascii():
            _require_unicode(item, key)
    return value


def _require_unicode(text: str, key: str) -> None:
    # JSON may escape lone surrogates ("\ud800"): valid JSON, but not text anything can encode.
    try:
        text.encode()
    except UnicodeEncodeError:
        raise MalformedBody(f"'{key}' holds a lone surrogate, which is not valid Unicode text") from None


def decode_json(raw: bytes) -> dict:
    """The JSON object in a request body, or `MalformedBody` saying what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError: non-UTF-8 bodies land here too.
        raise MalformedBody(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedBody("body must be a JSON object with 'roles' and 'messages'")
    return body


def prompting_from(body: dict, caller: TerminalInfo) -> Prompting:
    """Build a `Prompting` from a decoded body, or raise `MalformedBody` saying what is wrong."""
    roles, messages = _string_list(body, "roles"), _string_list(body, "messages")
    if not messages:
        raise MalformedBody("'messages' must hold at least one message")
    if len(roles) != len(messages):
        raise MalformedBody(f"'roles' has {len(roles)} entries but 'messages' has {len(messages)}")
    return Prompting(roles=roles, messages=messages, dendrite=caller)
