"""The prompt cache: what was asked recently, and (under `reuse`) what was answered."""

from .prompts import CULL_INTERVAL, PromptCache, answerer
from .stores import LocalStore, RedisStore, open_store

__all__ = ["CULL_INTERVAL", "LocalStore", "PromptCache", "RedisStore", "answerer", "open_store"]
