"""Prompt backends: callables that take a `Prompting` and return its completion."""
