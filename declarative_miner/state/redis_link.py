"""A Redis connection for state several machines share, failing closed: an unreachable Redis is a
503 naming the store, never a pass."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import Unavailable




class RedisLink:
    """`redis.Redis` at `url`; `call` runs one command and turns its failure into `Unavailable`.

    Args:
        url: redis://host:port/db.
        what: the store, as a refusal names it ("the replay store").
    """

    def __init__(self, url: str, what: str):
        import redis  # the redis extra: imported only when a store is configured

        self.client, self._what, self._errors = redis.Redis.from_url(url, socket_timeout=2), what, redis.RedisError

    def call(self, operation: Callable, *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except self._errors as exc:
            raise Unavailable(f"{self._what} is unreachable ({type(exc).__name__}); try again") from None

    def close(self) -> None:
        self.client.close()
