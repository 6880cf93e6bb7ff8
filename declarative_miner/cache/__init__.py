"""The prompt cache: what was asked recently, and (under `reuse`) what was answered."""

from .prompts import CULL_INTERVAL, PromptCache
from .stores import LocalStore, RedisStore

__all__ = ["CULL_INTERVAL", "LocalStore", "PromptCache", "RedisStore"]
