"""The validator side: sign a prompt with a hotkey, send it to a miner, read the answer.

    python -m declarative_miner.client "What is 2+2?"           # the dev validator -> the dev miner
    python -m declarative_miner.client "Hi" --host 1.2.3.4 --port 8091 --wallet.name v --wallet.hotkey h
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import httpx
from bittensor import http_auth

from .chain.dev import DEV_VALIDATOR

PROMPT_PATH = "/Prompting"


def default_home() -> str:
    """The miner's state directory, as `home` in the config defaults to it."""
    return os.environ.get("DECLARATIVE_MINER_HOME", "~/.declarative_miner")


@dataclass
class Reply:
    """What a miner answered: the HTTP status, the completion, or the error and its reason."""

    status: int
    completion: Optional[str] = None
    error: Optional[str] = None
    reason: Optional[str] = None
    headers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


class MinerClient:
    """Sends btauth/1-signed prompts to one miner.

    Args:
        signer: the caller's hotkey (a `Keypair`) or anything `http_auth.sign` accepts.
        host, port: where the miner listens.
        receiver: the miner's hotkey; None asks the miner's `/health` (fine on loopback; a
            validator takes it from the metagraph instead).
    """

    def __init__(self, signer: Any, host: str = "127.0.0.1", port: int = 8091,
                 receiver: Optional[str] = None, timeout: float = 30.0):
        self.signer, self.receiver = signer, receiver
        self.http = httpx.Client(base_url=f"http://{host}:{port}", timeout=timeout)

    def miner_hotkey(self) -> str:
        if self.receiver is None:
            self.receiver = self.http.get("/health").json()["hotkey"]
        return self.receiver

    def signed_headers(self, body: bytes, path: str = PROMPT_PATH, **sign_kwargs: Any) -> dict[str, str]:
        """The btauth/1 headers for `body`, bound to the miner's hotkey."""
        sign_kwargs.setdefault("receiver_ss58", self.miner_hotkey())
        headers = http_auth.sign(self.signer, method="POST", path=path, body=body, **sign_kwargs)
        return {**headers, "content-type": "application/json"}

    def send(self, body: bytes, headers: dict[str, str], path: str = PROMPT_PATH) -> Reply:
        """POST raw bytes with the given headers; for tests that tamper with either."""
        response = self.http.post(path, content=body, headers=headers)
        try:
            data = response.json()
        except ValueError:
            data = {"error": "not JSON", "reason": response.text[:200]}
        return Reply(response.status_code, data.get("completion"), data.get("error"), data.get("reason"),
                     dict(response.headers))

    def prompt(self, messages: Sequence[str], roles: Optional[Sequence[str]] = None) -> Reply:
        """Sign and send one chat; `roles` default to "user" for every message."""
        roles = list(roles) if roles is not None else ["user"] * len(messages)
        body = json.dumps({"roles": roles, "messages": list(messages)}).encode()
        return self.send(body, self.signed_headers(body))

    def close(self) -> None:
        self.http.close()


def _parser() -> argparse.ArgumentParser:
    home = default_home()
    parser = argparse.ArgumentParser(prog="python -m declarative_miner.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", nargs="+", help="the message(s) to send, in order")
    parser.add_argument("--role", default="user", help="the role of every message (default: user)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--receiver", help="the miner's hotkey (default: ask its /health)")
    parser.add_argument("--wallet.name", dest="wallet_name", default=DEV_VALIDATOR)
    parser.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    parser.add_argument("--wallet.path", dest="wallet_path", default=f"{home}/dev/wallets")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from .config import ConfigError
    from .wallet import open_wallet

    try:
        wallet = open_wallet(args.wallet_name, args.wallet_hotkey, str(Path(args.wallet_path).expanduser()))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    client = MinerClient(wallet.hotkey, args.host, args.port, args.receiver)
    try:
        reply = client.prompt(args.message, [args.role] * len(args.message))
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the miner at {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    finally:
        client.close()
    if reply.ok:
        print(reply.completion)
        return 0
    print(f"{reply.status} {reply.error}: {reply.reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
