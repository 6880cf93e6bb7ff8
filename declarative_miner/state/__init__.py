"""Where the state that requests share lives: this process's memory, this machine's disk, or Redis.

One config key, `state.store`, chooses for every kind of it: the replay store's nonces, the prompt
cache's claims and answers, the rate limits' budgets and the refusal counts that shed floods.

- `memory`: this process's own (one worker only); nothing outlives it.
- `disk` (the default): SQLite through diskcache, under the miner's home. The processes of one machine
  share it, and it survives restarts and crashes. SQLite's locks are the kernel's, so a process killed
  mid-write (kill -9, the OOM killer) neither wedges the others nor loses what they wrote.
- `redis://host:port/db`: several machines behind one hotkey share it; an unreachable Redis is a 503.
"""

from .stores import REDIS_SCHEMES, Store, kind_of, open_store

__all__ = ["REDIS_SCHEMES", "Store", "kind_of", "open_store"]
