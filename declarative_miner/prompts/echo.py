"""The zero-dependency backend: answer with the last message."""

from __future__ import annotations

import re
from typing import Iterator

from ..protocol import Prompting


def echo(request: Prompting) -> Iterator[str]:
    """Yield the last message back word by word (with its spacing), so streaming is testable."""
    yield from re.findall(r"\s*\S+|\s+$", request.messages[-1]) or [""]
