"""The validator side: sign a request with a hotkey, send it to a miner, read the answer.

    python -m declarative_miner.client "What is 2+2?"           # the dev validator -> the dev miner
    python -m declarative_miner.client "Hi" --host 1.2.3.4 --port 8091 --wallet v --wallet-hotkey h
    python -m declarative_miner.client "Hi" --wire-format v10                 # as a bittensor 10 Dendrite
    python -m declarative_miner.client "Hi" --wire-format epistula           # Epistula v2
    python -m declarative_miner.client --synapse Dummy '{"dummy_input": 21}'  # any declared type
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import httpx
from bittensor import http_auth

from .chain.dev import DEV_VALIDATOR
from .files import default_home
from .auth import epistula, v10

PROMPT_PATH = "/Prompting"
STREAM_PATH = "/StreamPrompting"


@dataclass
class Reply:
    """What a miner answered: the HTTP status, the completion, or the error and its reason."""

    status: int
    completion: Optional[str] = None
    error: Optional[str] = None
    reason: Optional[str] = None
    headers: dict = field(default_factory=dict)
    chunks: list = field(default_factory=list)  # streamed replies: the chunks as they arrived
    fields: dict = field(default_factory=dict)  # the whole JSON answer (a declared type's outputs and inputs)

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
        self.uuid = str(uuid.uuid1())  # one per client, as a v10 Dendrite has
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
        return _reply(response)

    def signed(self, path: str, fields: dict, wire_format: str = "btauth",
               hash_fields: Sequence[str] = ()) -> tuple[dict[str, str], bytes]:
        """Headers and body of a request carrying `fields` to `path` (`/<type>`), signed in `wire_format`:
        btauth (bittensor 11), v10 (as a bittensor 10 Dendrite, covering `hash_fields`) or epistula (v2)."""
        if wire_format == "v10":
            return v10.sign_synapse(self.signer, receiver=self.miner_hotkey(), name=path.lstrip("/"), fields=fields,
                                    hash_fields=tuple(hash_fields), uuid=self.uuid)
        body = json.dumps(fields).encode()
        if wire_format == "epistula":
            return epistula.sign(self.signer, body, self.miner_hotkey()), body
        return self.signed_headers(body, path), body

    def request(self, path: str, fields: dict, wire_format: str = "btauth", hash_fields: Sequence[str] = ()) -> Reply:
        """Sign and send a request of any declared type; `Reply.fields` holds the typed answer."""
        headers, body = self.signed(path, fields, wire_format, hash_fields)
        return self.send(body, headers, path)

    def prompt(self, messages: Sequence[str], roles: Optional[Sequence[str]] = None,
               wire_format: str = "btauth") -> Reply:
        """Sign and send one chat; `roles` default to "user" for every message. Any wire format
        is served on the same port and route."""
        return self.request(PROMPT_PATH, _chat(messages, roles), wire_format, ("messages",))

    def stream(self, messages: Sequence[str], roles: Optional[Sequence[str]] = None, wire_format: str = "btauth",
               on_chunk: Callable[[str], None] = lambda chunk: None) -> Reply:
        """Like `prompt`, from `/StreamPrompting`: `on_chunk` sees each chunk as it arrives."""
        headers, body = self.signed(STREAM_PATH, _chat(messages, roles), wire_format, ("messages",))
        with self.http.stream("POST", STREAM_PATH, content=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                return _reply(response)
            reply = Reply(200, headers=dict(response.headers))
            pieces = response.iter_text() if wire_format == "v10" else _events(response.iter_lines(), reply)
            for chunk in pieces:
                reply.chunks.append(chunk)
                on_chunk(chunk)
        if wire_format == "v10":
            reply.completion = "".join(reply.chunks)
        return reply

    def close(self) -> None:
        self.http.close()


def _chat(messages: Sequence[str], roles: Optional[Sequence[str]]) -> dict:
    return {"roles": list(roles) if roles is not None else ["user"] * len(messages), "messages": list(messages)}


def _events(lines: Iterator[str], reply: Reply) -> Iterator[str]:
    """Chunks of a btauth/1 server-sent event stream; the closing event fills `reply`."""
    event = "message"
    for line in lines:
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: "):])
            if event == "done":
                reply.completion = data["completion"]
            elif event == "error":
                reply.status, reply.error, reply.reason = data["status"], data["error"], data["reason"]
            else:
                yield data["chunk"]
            event = "message"


WIRE_FORMATS = {"btauth": "btauth/1 (bittensor 11)", "v10": "a bittensor 10 Dendrite's", "epistula": "Epistula v2"}


def _parser() -> argparse.ArgumentParser:
    home = default_home()
    parser = argparse.ArgumentParser(prog="python -m declarative_miner.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", nargs="+", help="the message(s) to send, in order; with --synapse, the "
                                                   "request's fields as one JSON object")
    parser.add_argument("--synapse", metavar="NAME", help="send a request of this declared type (POST /NAME) and "
                                                          "print its whole answer as JSON")
    parser.add_argument("--hash-fields", default="", help="with --synapse and --wire-format v10: the fields the "
                                                          "type's body hash covers, comma-separated")
    parser.add_argument("--role", default="user", help="the role of every message (default: user)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--receiver", help="the miner's hotkey (default: ask its /health)")
    parser.add_argument("--wire-format", choices=list(WIRE_FORMATS), default="btauth",
                        help="; ".join(f"{name}: {what}" for name, what in WIRE_FORMATS.items()))
    parser.add_argument("--stream", action="store_true", help="print the answer as it streams")
    # As bittensor 11's btcli names them (the older dotted spellings still work).
    parser.add_argument("--wallet", "--wallet.name", dest="wallet_name", default=DEV_VALIDATOR)
    parser.add_argument("--wallet-hotkey", "--wallet.hotkey", dest="wallet_hotkey", default="default")
    parser.add_argument("--wallet-path", "--wallet.path", dest="wallet_path", default=f"{home}/dev/wallets")
    return parser


def _reply(response: httpx.Response) -> Reply:
    try:
        data = response.json()
    except ValueError:
        data = {"error": "not JSON", "reason": response.text[:200]}
    if not isinstance(data, dict):
        data = {"error": "not a JSON object", "reason": response.text[:200]}
    # btauth/1 errors say {"error", "reason"}; v10 ones say {"message"}, which starts with the error.
    return Reply(response.status_code, data.get("completion"), data.get("error"),
                 data.get("reason", data.get("message")), dict(response.headers), fields=data)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from .errors import ConfigError
    from .wallet import open_wallet

    try:
        wallet = open_wallet(args.wallet_name, args.wallet_hotkey, str(Path(args.wallet_path).expanduser()))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    client = MinerClient(wallet.hotkey, args.host, args.port, args.receiver)
    try:
        if args.synapse:
            return _send_declared(client, args)
        roles = [args.role] * len(args.message)
        if args.stream:
            reply = client.stream(args.message, roles, args.wire_format, lambda c: print(c, end="", flush=True))
            if reply.ok:
                print()
                return 0
        else:
            reply = client.prompt(args.message, roles, wire_format=args.wire_format)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the miner at {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    finally:
        client.close()
    if reply.ok:
        print(reply.completion)
        return 0
    said = f"{reply.error}: {reply.reason}" if reply.error else reply.reason or "(no reason given)"
    print(f"{reply.status} {said}", file=sys.stderr)
    return 1


def _send_declared(client: MinerClient, args: argparse.Namespace) -> int:
    try:
        fields = json.loads(" ".join(args.message))
    except ValueError as exc:
        print(f"error: the fields are not JSON ({exc})", file=sys.stderr)
        return 2
    if not isinstance(fields, dict):
        print("error: the fields must be one JSON object, such as '{\"dummy_input\": 21}'", file=sys.stderr)
        return 2
    hash_fields = [f for f in args.hash_fields.split(",") if f]
    reply = client.request(f"/{args.synapse}", fields, args.wire_format, hash_fields)
    if reply.ok:
        print(json.dumps(reply.fields, indent=2, ensure_ascii=False))
        return 0
    print(f"{reply.status} {reply.error}: {reply.reason}" if reply.error else f"{reply.status} {reply.reason}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
