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
          called_with: Sequence[str] = (), checking: bool = False) -> Any:
    """Build the object a config names: a class is instantiated, a function gets its kwargs bound.

    `target` is a short name from `aliases` or any import path; `called_with` names the
    arguments each call of a function will pass (a prompt gets the request). Raises
    `ConfigError` at `key` when the target cannot be imported or its whole signature does not
    fit (these keyword arguments, the call's arguments, and nothing required left over); a
    `BadArgument` from a constructor is reported at its argument's key (`prompt._target_` ->
    `prompt.<argument>`), a `MissingDependency` with the command that installs it.

    `checking` (`mode=validate`): a class with a `check` classmethod is checked by it, which finds
    what it needs (a model) without loading it, and `Checked` stands in for the object.
    """
    path = aliases.get(target, target)
    try:
        obj = locate(path)
    except MissingDependency as exc:
        raise ConfigError([ConfigProblem(key, str(exc))]) from None
    except (ImportError, AttributeError, ValueError) as exc:
        expected = "one of " + ", ".join(aliases) + " or an import path" if aliases else "an import path"
        if isinstance(exc, ModuleNotFoundError):  # most often the operator's own module, off the path
            expected += (" importable wherever the miner starts: pip install your module, or set PYTHONPATH to "
                         "its directory (a systemd unit: Environment=PYTHONPATH=...)")
        raise ConfigError([ConfigProblem(key, f"cannot import {target!r} ({exc}; expected {expected})")]) from None
    try:
        calls = () if inspect.isclass(obj) else called_with  # a class gets only its arguments
        signature = inspect.signature(obj)
        signature.bind(*calls, **kwargs)
    except TypeError as exc:
        raise ConfigError(_misfits(signature, calls, kwargs, key, path, exc)) from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    if inspect.isclass(obj):
        try:
            if checking and hasattr(obj, "check"):
                obj.check(**kwargs)
                return Checked(path, dict(kwargs))
            return obj(**kwargs)
        except BadArgument as exc:
            raise ConfigError([ConfigProblem(f"{key.removesuffix('._target_')}.{exc.argument}", str(exc))]) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError([ConfigProblem(key, f"{exc} (got arguments {_names(kwargs)})")]) from None
    return functools.partial(obj, **kwargs) if kwargs else obj


class Checked:
    """What `mode=validate` holds in place of an object it checked without building (a model it
    found without loading)."""

    def __init__(self, path: str, kwargs: dict):
        self.path, self.kwargs = path, kwargs

    def __repr__(self) -> str:
        return f"{self.path} (found, not loaded: mode=validate)"


def _misfits(signature: inspect.Signature, calls: Sequence[str], kwargs: Mapping[str, Any], key: str, path: str,
             exc: TypeError) -> list[ConfigProblem]:
    """Each argument the callable does not take, and each it needs and did not get, at its own key."""
    base = key.removesuffix("._target_")
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    named = [p.name for p in params][len(calls):]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    problems = [ConfigProblem(f"{base}.{name}", f"unknown key (got {name}; expected one of {', '.join(named) or 'none'})")
                for name in kwargs if name not in named and not takes_any]
    problems += [ConfigProblem(f"{base}.{p.name}", f"missing (got none; expected a value for {p.name})")
                 for p in params[len(calls):] if p.default is p.empty and p.name not in kwargs]
    return problems or [ConfigProblem(key, f"{path} does not take these arguments (got {_names(kwargs)}; {exc})")]


def _names(kwargs: Mapping[str, Any]) -> str:
    # Names only: an argument's value may be a secret (an API key) and errors end up in logs.
    return ", ".join(kwargs) or "none"
