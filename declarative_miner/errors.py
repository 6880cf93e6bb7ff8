"""What went wrong, for whom: a config's problems (`ConfigError`), and why a request was not served
(each `RequestError` carries its HTTP status and a reason for the caller). Imports nothing heavy, so
the client can report either without loading Hydra."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: the full key and what is wrong with it. `transient`: the config
    may be right and what it names unreachable now (a chain down at boot): worth starting again."""

    key: str
    message: str
    transient: bool = False

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config, reported together."""

    def __init__(self, problems: Sequence[ConfigProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def transient(self) -> bool:
        """Whether every problem is of the moment (nothing to fix in the config): a start may work later."""
        return all(p.transient for p in self.problems)


class RequestError(Exception):
    """A request the miner refuses or could not serve; `reason` is safe to send to the caller."""

    status = 500
    error = "internal error"
    signer: str | None = None  # the hotkey whose signature checked out before the refusal, if one did

    def __init__(self, reason: str, *, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}


class BadRequest(RequestError):
    status, error = 400, "bad request"


class NotAuthenticated(RequestError):
    status, error = 401, "authentication failed"


class Blacklisted(RequestError):
    status, error = 403, "blacklisted"


class NotFound(RequestError):
    status, error = 404, "not found"


class DuplicatePrompt(RequestError, ValueError):
    """A recent identical prompt; a ValueError as the seed's `_prompt` documents."""

    status, error = 409, "duplicate prompt"


class ClientGone(RequestError):
    """The caller disconnected: its prompt was stopped. 499, as nginx counts it; never sent."""

    status, error = 499, "client closed request"


class StreamNotRead(ClientGone):
    """The caller stopped reading a streamed answer: the stream ends and its connection is dropped."""


class RequestTimeout(RequestError):
    status, error = 408, "request timeout"


class BodyTooLarge(RequestError):
    status, error = 413, "body too large"


class HeadersTooLarge(RequestError):
    status, error = 431, "request header fields too large"


class MalformedBody(RequestError):
    status, error = 422, "malformed body"


class RateLimited(RequestError):
    status, error = 429, "rate limited"


class PromptFailed(RequestError):
    status, error = 500, "prompt failed"


class BadGateway(RequestError):
    """The model server behind the miner refused or mangled the request."""

    status, error = 502, "model server error"


class OverCapacity(RequestError):
    status, error = 503, "over capacity"


class Unavailable(RequestError):
    status, error = 503, "unavailable"


class PromptTimeout(RequestError):
    status, error = 504, "prompt timed out"
