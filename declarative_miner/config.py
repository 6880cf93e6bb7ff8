"""Where the config tree comes from (conf/ and recipes/, composed by Hydra) and how problems read."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from enum import Enum
from pathlib import Path
from typing import Iterable, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from . import schema
from .errors import ConfigError, ConfigProblem

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    # An installed wheel carries the folder inside the package; a checkout has it beside.
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


CONF_DIR = _shipped("conf")
RECIPES_DIR = _shipped("recipes")
PRIMARY = "miner"


def recipes() -> list[str]:
    """The names usable as `+recipe=NAME`."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def register() -> None:
    """Put the schema and every recipe in Hydra's ConfigStore (recipes form the `recipe` group),
    and the `dm.expand` resolver (`~` expanded) that the run directories under `home` use."""
    OmegaConf.register_new_resolver("dm.expand", os.path.expanduser, replace=True)
    schema.register()
    store = ConfigStore.instance()
    for name in recipes():
        node = OmegaConf.load(RECIPES_DIR / f"{name}.yaml")
        store.store(group="recipe", name=name, node=node, package="_global_", provider="recipes")


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(PRIMARY, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def compose(overrides: Iterable[str] = ()) -> DictConfig:
    """Compose the tree from conf/miner.yaml plus Hydra overrides, or raise `ConfigError`
    listing every override that is wrong on its own (Hydra itself stops at the first)."""
    overrides = list(overrides)
    register()
    try:
        return _compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        problems = []
        if len(overrides) > 1:
            # Each override is tried with the group choices that are fine (`+recipe=llama` makes
            # `prompt.model` a key), so one bad override does not make others look wrong.
            choices = [o for o in overrides if "." not in o.partition("=")[0] and _fails([o]) is None]
            for single in overrides:
                if (alone := _fails(choices + [single] if single not in choices else [single])) is not None:
                    problems += explain(alone, [single])
        raise ConfigError(problems or explain(exc, overrides)) from None


def _fails(overrides: list[str]) -> BaseException | None:
    try:
        _compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        return exc
    return None


def to_settings(cfg: DictConfig) -> schema.MinerConfig:
    """The composed tree as plain typed objects: what the composition root hands to components."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(explain(exc, [])) from None


def _override_value(key: str, overrides: Sequence[str]) -> str | None:
    for text in overrides:
        name, sep, value = text.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def _field_type(key: str):
    """The schema's declared type for a dotted key, or None where the schema is open."""
    node: typing.Any = schema.MinerConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
    return node


def _describe(tp) -> str:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(m.name for m in tp)
    if dataclasses.is_dataclass(tp):
        return "a group of keys: " + ", ".join(f.name for f in dataclasses.fields(tp))
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return f"{_describe(args[0])} or null"
    return getattr(tp, "__name__", str(tp))


def _explain_omegaconf(exc: OmegaConfBaseException, overrides: Sequence[str]) -> ConfigProblem:
    key = getattr(exc, "full_key", None) or "config"
    got = _override_value(key, overrides)
    if got is None:
        got = repr(getattr(exc, "value", None)) if getattr(exc, "value", None) is not None else "?"
    first_line = str(getattr(exc, "msg", exc)).splitlines()[0]
    if isinstance(exc, ConfigKeyError) or "not in" in first_line:
        parent = _field_type(key.rpartition(".")[0]) if "." in key else schema.MinerConfig
        expected = _describe(parent) if parent is not None else "a key the schema declares"
        return ConfigProblem(key, f"unknown key (got {key}={got}; expected {expected})")
    if isinstance(exc, ValidationError):
        tp = _field_type(key)
        expected = _describe(tp) if tp is not None else first_line
        return ConfigProblem(key, f"invalid value (got {got}; expected {expected})")
    return ConfigProblem(key, f"{first_line} (got {got})")


_MISSING_OPTION = re.compile(r"Could not (?:find|load) '([^']+)/([^']+)'")


def _explain_missing(exc: MissingConfigException) -> ConfigProblem:
    match = _MISSING_OPTION.search(str(exc))
    if not match:
        return ConfigProblem("defaults", str(exc).splitlines()[0])
    group, option = match.groups()
    available = [line.strip() for line in str(exc).split("Available options in", 1)[-1].splitlines()[1:]
                 if line.startswith("\t") and "=" not in line]
    expected = "one of " + ", ".join(available) if available else "an option in conf/" + group
    return ConfigProblem(group, f"no such option (got {option}; expected {expected})")


def explain(exc: BaseException, overrides: Sequence[str]) -> list[ConfigProblem]:
    """Turn a Hydra/OmegaConf exception into `key: what is wrong (got X; expected Y)` problems."""
    if isinstance(exc, MissingConfigException):
        return [_explain_missing(exc)]
    if isinstance(exc, OverrideParseException):
        return [ConfigProblem("overrides", f"cannot parse an override ({str(exc).splitlines()[0]})")]
    cause = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if cause is not None:
        return [_explain_omegaconf(cause, overrides)]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = re.search(r"override '([^']+)'", text)
    if match and "No match in the defaults list" in text:  # `recipe=echo`: a group not chosen by default
        group = match.group(1)
        value = _override_value(group, overrides) or "NAME"
        return [ConfigProblem(group, f"is not chosen by default, so it is added with a + (got {group}={value}; "
                                     f"expected +{group}={value})")]
    return [ConfigProblem(match.group(1) if match else "overrides", text)]


def split_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs a basic `-m` sweep over these overrides would run, each as plain overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]
