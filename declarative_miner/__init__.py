"""declarative_miner: a Bittensor miner whose whole behaviour is declared in Hydra YAML."""

from .prompting import Prompting, TerminalInfo

__all__ = ["Miner", "Prompting", "TerminalInfo"]


def __getattr__(name: str):
    # Miner pulls in bittensor and uvicorn; import it only when asked for.
    if name == "Miner":
        from .miner import Miner

        return Miner
    raise AttributeError(name)
