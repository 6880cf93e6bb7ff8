"""The prompt cache: what was asked recently, and (under `reuse`) what was answered."""

from .prompts import PromptCache, answerer

__all__ = ["PromptCache", "answerer"]
