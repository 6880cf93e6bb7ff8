"""The prompts `mode=eval` sends: the built-in set, or a JSON-lines file of the operator's own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, ConfigProblem

BUILT_IN = Path(__file__).resolve().parents[1] / "data" / "prompts.jsonl"


@dataclass(frozen=True)
class Item:
    """One prompt as a validator would send it, and the answer expected of it, if any."""

    roles: list[str]
    messages: list[str]
    reference: Optional[str] = None


def load(path: Optional[str], limit: Optional[int] = None) -> list[Item]:
    """The items of `path` (None: the built-in set), at most `limit` of them.

    Each line is `{"messages": [...], "roles": [...]?, "reference": "..."?}`; roles default to
    "user". Raises `ConfigError` at `eval.dataset` naming the line that is wrong.
    """
    source = Path(path).expanduser() if path else BUILT_IN
    try:
        lines = source.read_text().splitlines()
    except OSError as exc:
        raise _problem(f"cannot read it (got {path}: {exc.strerror}; expected a .jsonl file)") from None
    items = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            items.append(_item(line, f"{source}:{number}"))
    if not items:
        raise _problem(f"no prompts in it (got {source}; expected one JSON object per line)")
    return items[:limit] if limit else items


def _item(line: str, where: str) -> Item:
    try:
        entry = json.loads(line)
        messages = entry["messages"]
        roles = entry.get("roles") or ["user"] * len(messages)
        reference = entry.get("reference")
        ok = (isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages)
              and len(roles) == len(messages) and (reference is None or isinstance(reference, str)))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise _problem(f"bad line (got {where}: {line[:80]!r}; expected {{\"messages\": [str, ...], "
                       "\"roles\": [str, ...] (optional, same length), \"reference\": str (optional)}})")
    return Item(list(roles), list(messages), reference)


def _problem(message: str) -> ConfigError:
    return ConfigError([ConfigProblem("eval.dataset", message)])
