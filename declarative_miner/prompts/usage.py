"""Token counts a model backend reports, read by `/metrics` and by `mode=eval`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Usage:
    """Totals since start-up; `add` may be called from any thread."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _listeners: list = field(default_factory=list, repr=False, compare=False)

    def listen(self, listener: Callable[[int, int], None]) -> None:
        """Call `listener(prompt_tokens, completion_tokens)` for every `add` from now on (metrics)."""
        self._listeners.append(listener)

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.requests += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
        for listener in self._listeners:
            listener(prompt_tokens, completion_tokens)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens}
