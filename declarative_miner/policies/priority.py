"""Priority strategies: `f(request, metagraph) -> float`; higher runs first when requests wait."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Mapping

from ..chain.metagraph import Metagraph
from ..imports import build
from ..prompting import Prompting


def by_stake(request: Prompting, metagraph: Metagraph) -> float:
    """The caller's total stake; strangers get 0."""
    neuron = metagraph.by_hotkey(request.dendrite.hotkey)
    return neuron.total_stake if neuron is not None else 0.0


class Constant:
    """The same priority for everyone: first come, first served."""

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> float:
        return self.value


class TimeStake:
    """The seed's formula: stake plus `time_stake_multiplicate` x the seconds since the caller's
    oldest request among its last `history` (capped at `max_idle`; a new caller counts as idle
    that long). A caller that has just sent a burst waits behind one of equal stake that has not.

    At most `max_callers` histories are kept, least recently seen first out (a forgotten caller
    counts as idle, as a new one does): O(1) per request and bounded memory.
    """

    def __init__(self, time_stake_multiplicate: float = 1.0, history: int = 10, max_idle: float = 60.0,
                 max_callers: int = 10_000):
        self.multiplicate, self.history, self.max_idle = float(time_stake_multiplicate), int(history), float(max_idle)
        self.max_callers = max_callers
        self._seen: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many callers are remembered (at most `max_callers`)."""
        return len(self._seen)

    def __call__(self, request: Prompting, metagraph: Metagraph) -> float:
        now, hotkey = time.monotonic(), request.dendrite.hotkey
        with self._lock:
            times = self._seen.pop(hotkey, None)
            if times is None:
                times = collections.deque(maxlen=self.history)
                if len(self._seen) >= self.max_callers:
                    self._seen.popitem(last=False)
            self._seen[hotkey] = times
            idle = min(self.max_idle, now - times[0]) if len(times) == self.history else self.max_idle
            times.append(now)
        return by_stake(request, metagraph) + self.multiplicate * idle


STRATEGIES = {
    "stake": "declarative_miner.policies.priority:by_stake",
    "time_stake": "declarative_miner.policies.priority:TimeStake",
    "constant": "declarative_miner.policies.priority:Constant",
}


def build_priority(strategy: str, params: Mapping[str, Any]) -> Callable[[Prompting, Metagraph], float]:
    """The strategy `priority.strategy` names (a short name of STRATEGIES or an import path) with
    its `params`; `ConfigError` when it cannot be built or called as `f(request, metagraph)`."""
    return build(strategy, params, "priority.strategy", aliases=STRATEGIES, called_with=("request", "metagraph"))
