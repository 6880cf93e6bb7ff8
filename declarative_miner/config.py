"""Where the config tree comes from (conf/ and recipes/, composed by Hydra) and how problems read."""

from __future__ import annotations

import dataclasses
import itertools
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
from .files import default_home

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
    overrides = with_search_path(list(overrides))
    register()
    try:
        return _compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        problems, choices = [], []
        where = [o for o in overrides if o.startswith(SEARCH_PATH + "=")]  # in every try: it finds the options
        tried = [o for o in overrides if o not in where]
        if len(tried) > 1:
            # Each override is tried with the group choices that are fine (`+recipe=llama` makes
            # `prompt.model` a key), so one bad override does not make others look wrong.
            choices = [o for o in tried if "." not in o.partition("=")[0] and _fails([o], where) is None]
            for single in tried:
                if (alone := _fails(choices + [single] if single not in choices else [single], where)) is not None:
                    problems += explain(alone, [single])
        raise ConfigError([_with_keys(p, choices + where) for p in problems or explain(exc, overrides)]) from None


def _with_keys(problem: ConfigProblem, fine: list[str]) -> ConfigProblem:
    """An unknown key of an open group (`prompt`, a synapse, a rule), told with the keys it has."""
    parent, _, name = problem.key.rpartition(".")
    declared = _field_type(parent) if parent else dict
    if not problem.message.startswith("unknown key") or not (declared is None or typing.get_origin(declared) is dict):
        return problem
    try:
        node = OmegaConf.select(_compose(fine), parent)
    except (HydraException, OmegaConfBaseException):
        return problem
    if not isinstance(node, DictConfig):
        return problem
    return ConfigProblem(problem.key, f"unknown key (got {name}; expected one of {', '.join(map(str, node.keys()))}, "
                                      f"or +{problem.key}=... to add an argument {parent} takes)")


def _fails(overrides: list[str], where: list[str]) -> BaseException | None:
    try:
        _compose(overrides + where)
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
    """The jobs a basic `-m` sweep over these overrides would run (every combination of the swept
    values, in order), each as plain overrides."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


SEARCH_PATH = "hydra.searchpath"
OWN_CONFIG = "conf"  # the operator's own config directory, inside home


def own_config_dir(overrides: Sequence[str] = ()) -> Path:
    """Where the operator's own config lives: `home/conf` (home as overridden, else its default)."""
    return Path(_override_value("home", overrides) or default_home()).expanduser() / OWN_CONFIG


def chosen(overrides: Sequence[str]) -> list[str]:
    """The overrides an operator chose, as a job is named: without the search path the command line adds."""
    return [o for o in overrides if not o.lstrip("+~").startswith(SEARCH_PATH + "=")]


def search_path_entries(override: str) -> list[str]:
    """The entries of a `hydra.searchpath=[...]` override, as Hydra's own parser reads them."""
    return list(OverridesParser.create().parse_overrides([override])[0].value())


def with_search_path(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> list[str]:
    """`overrides` with one `hydra.searchpath` naming, in order, the operator's own config directory
    (when it exists), `config_dirs` (--config-dir) and what a `hydra.searchpath` override named."""
    entries, rest = [], []
    for text in overrides:
        if text.lstrip("+~").startswith(SEARCH_PATH + "="):
            entries += search_path_entries(text)
        else:
            rest.append(text)
    own = own_config_dir(overrides)
    paths = ([str(own)] if own.is_dir() else []) + [str(Path(d).expanduser().resolve()) for d in config_dirs]
    entries = [f"file://{path}" for path in paths] + [e for e in entries if e not in (f"file://{p}" for p in paths)]
    return rest + ([f"{SEARCH_PATH}=[{','.join(entries)}]"] if entries else [])
