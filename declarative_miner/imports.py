"""Turning `short name or import path` plus keyword arguments into an object, with clear errors."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Mapping, Sequence

from .errors import ConfigError, ConfigProblem


class MissingDependency(ImportError):
    """Raised when importing a component whose optional dependencies are not installed."""

    def __init__(self, component: str, missing: str | None, install: str):
        super().__init__(f"{component} needs {missing or 'a package'}, which is not installed (expected: {install})")


class BadArgument(ValueError):
    """Raised by a component's constructor about one of its own arguments; reported at that key."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


def locate(path: str) -> Any:
    """Import `package.module:attr` or `package.module.attr`."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"'{path}' is not an import path like package.module.name")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build(target: str, kwargs: Mapping[str, Any], key: str, *, aliases: Mapping[str, str] = {},
          called_with: Sequence[str] = ()) -> Any:
    """Build the object a config names: a class is instantiated, a function gets its kwargs bound.

    `target` is a short name from `aliases` or any import path; `called_with` names the
    arguments each call of a function will pass (a prompt gets the request). Raises
    `ConfigError` at `key` when the target cannot be imported or its whole signature does not
    fit (these keyword arguments, the call's arguments, and nothing required left over); a
    `BadArgument` from a constructor is reported at its argument's key (`prompt._target_` ->
    `prompt.<argument>`), a `MissingDependency` with the command that installs it.
    """
    path = aliases.get(target, target)
    try:
        obj = locate(path)
    except MissingDependency as exc:
        raise ConfigError([ConfigProblem(key, str(exc))]) from None
    except (ImportError, AttributeError, ValueError) as exc:
        expected = "one of " + ", ".join(aliases) + " or an import path" if aliases else "an import path"
        raise ConfigError([ConfigProblem(key, f"cannot import {target!r} ({exc}; expected {expected})")]) from None
    try:
        calls = () if inspect.isclass(obj) else called_with  # a class gets only its arguments
        inspect.signature(obj).bind(*calls, **kwargs)
    except TypeError as exc:
        raise ConfigError([ConfigProblem(key, f"{path} does not take these arguments (got {_names(kwargs)}; {exc})")]) from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    if inspect.isclass(obj):
        try:
            return obj(**kwargs)
        except BadArgument as exc:
            raise ConfigError([ConfigProblem(f"{key.removesuffix('._target_')}.{exc.argument}", str(exc))]) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError([ConfigProblem(key, f"{exc} (got arguments {_names(kwargs)})")]) from None
    return functools.partial(obj, **kwargs) if kwargs else obj


def _names(kwargs: Mapping[str, Any]) -> str:
    # Names only: an argument's value may be a secret (an API key) and errors end up in logs.
    return ", ".join(kwargs) or "none"
