"""The zero-dependency backend: answer with the last message."""

from __future__ import annotations

from ..protocol import Prompting


def echo(request: Prompting) -> str:
    """Return the last message unchanged."""
    return request.messages[-1]
