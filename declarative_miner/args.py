"""The config tree as argparse options (`--cache.ttl 30`), for the seed's `add_args`."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from enum import Enum
from functools import lru_cache

from omegaconf import DictConfig, OmegaConf

from . import schema
from .config import _field_type


@lru_cache(maxsize=1)
def _comments() -> dict[str, str]:
    """`Class.field` -> the trailing comment of its line in schema.py (the field's docs)."""
    found = {}
    for cls in (c for c in vars(schema).values() if dataclasses.is_dataclass(c)):
        for line in inspect.getsource(cls).splitlines():
            match = re.match(r"\s+(\w+): [^#]*#\s*(.+)$", line)
            if match:
                found[f"{cls.__name__}.{match.group(1)}"] = match.group(2)
    return found


def _help(key: str) -> str:
    parent = _field_type(key.rpartition(".")[0]) if "." in key else schema.MinerConfig
    name = getattr(parent, "__name__", "")
    return _comments().get(f"{name}.{key.rpartition('.')[2]}", "")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered in ("true", "1", "yes")


def _option(tp) -> dict:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"choices": [m.name for m in tp]}
    if tp is bool:
        return {"type": _bool, "metavar": "{true,false}"}
    if tp in (int, float):
        return {"type": tp}
    return {"type": str}


def _leaves(node, prefix: str = "") -> typing.Iterator[tuple[str, object]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def add_args(parser: argparse.ArgumentParser, tree: DictConfig) -> None:
    """One `--a.b.c` option per leaf of `tree`, typed and documented from the schema."""
    for key, default in _leaves(OmegaConf.to_container(tree, resolve=False, enum_to_str=True)):
        help_text = _help(key)
        parser.add_argument(f"--{key}", dest=key, default=None, **_option(_field_type(key)),
                            help=f"{help_text} (default: {default})".strip())


def _quote(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value).lower() if isinstance(value, bool) else str(value)


def overrides(namespace: argparse.Namespace) -> list[str]:
    """The Hydra overrides equivalent to the options given on the command line."""
    roots = {f.name for f in dataclasses.fields(schema.MinerConfig)}
    return [f"{key}={_quote(value)}" for key, value in vars(namespace).items()
            if value is not None and key.split(".")[0] in roots]
