"""Answers for request types that are not chats: small, deterministic, for templates and tests."""

from __future__ import annotations

from typing import Any


def double(request: Any, field: str = "dummy_input") -> int:
    """Twice the request's `field`: the subnet template's `Dummy` miner answers `dummy_output` so."""
    return getattr(request, field) * 2
