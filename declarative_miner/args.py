"""The config tree as argparse options (`--cache.ttl 30`), for the seed's `add_args`."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from enum import Enum

from omegaconf import DictConfig, OmegaConf

from . import schema
from .config import _field_type


def _help(key: str) -> str:
    """The schema's help for `key` (schema.doc's metadata), or nothing for keys it does not name."""
    parent = _field_type(key.rpartition(".")[0]) if "." in key else schema.MinerConfig
    if not dataclasses.is_dataclass(parent):
        return ""
    named = {f.name: f for f in dataclasses.fields(parent)}
    leaf = named.get(key.rpartition(".")[2])
    return leaf.metadata.get("help", "") if leaf else ""


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
