"""Priority strategies: `f(request, metagraph) -> float`; higher runs first when requests wait."""

from __future__ import annotations

from ..chain.metagraph import Metagraph
from ..protocol import Prompting


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


STRATEGIES = {
    "stake": "declarative_miner.policies.priority:by_stake",
    "constant": "declarative_miner.policies.priority:Constant",
}
