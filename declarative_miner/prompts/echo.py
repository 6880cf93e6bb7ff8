"""The zero-dependency backend: answer with the last message."""

from __future__ import annotations

import re
from typing import AsyncIterator

from ..prompting import Prompting

_WORDS = re.compile(r"\s*\S+|\s+$")  # each word with the spacing before it, and trailing spacing


async def echo(request: Prompting) -> AsyncIterator[str]:
    """Yield the last message back word by word (with its spacing), so streaming is testable.

    Asynchronous because it never blocks: it runs on the event loop, with no worker thread.
    """
    for word in _WORDS.findall(request.messages[-1]) or [""]:
        yield word
