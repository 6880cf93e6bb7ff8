"""Counting what each peer address holds (connections, unverified requests), within bounds."""

from __future__ import annotations


class AddressTally:
    """How many of something each address holds now, and in all; O(1) per call."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # a plain dict: a Counter's misses call Python code
        self.total = 0

    def held_by(self, address: str) -> int:
        return self._held.get(address, 0)

    def take(self, address: str) -> None:
        self._held[address] = self._held.get(address, 0) + 1
        self.total += 1

    def give_back(self, address: str) -> None:
        self.total -= 1
        if left := self._held[address] - 1:
            self._held[address] = left
        else:
            del self._held[address]  # forget addresses that hold nothing: memory follows what is held
