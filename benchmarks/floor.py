"""The floor of this stack: a bare uvicorn ASGI app that verifies the caller and echoes. A request
signed with btauth/1 is checked by bittensor 11's `http_auth.verify`; one signed as a bittensor 10
Dendrite signs (protocols.md §1) is checked as a v10 Axon checks it: the signed nonce's age, the
sr25519 signature over `nonce.dendrite.axon.uuid.body_hash`, the body's hash, a replayed nonce.

    python benchmarks/floor.py --port 8101 --hotkey <ss58 the requests are signed for> [--http h11]
"""

import argparse
import hashlib
import json
import time

import uvicorn
from bittensor import http_auth
from bittensor.sp_core import CRYPTO_SR25519
from bittensor.sp_core import verify as sr25519_verify

MAX_AGE = 120.0  # seconds: the requests are signed before the run, as for the miner (axon.max_age=120)

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--hotkey", required=True)
parser.add_argument("--http", default="auto", help="uvicorn's HTTP parser: auto (httptools here) or h11, the miner's")
args = parser.parse_args()
store = http_auth.InMemoryNonceStore(retention=13.0)
seen_v10: set[tuple[str, str, int]] = set()  # a run's nonces: a few thousand


def verify_v10(headers: dict, body: bytes) -> dict:
    hotkey, uuid = headers["bt_header_dendrite_hotkey"], headers["bt_header_dendrite_uuid"]
    nonce, signed_hash = int(headers["bt_header_dendrite_nonce"]), headers["computed_body_hash"]
    if abs(time.time_ns() - nonce) > MAX_AGE * 1e9:
        raise http_auth.AuthError("stale nonce")
    signature = bytes.fromhex(headers["bt_header_dendrite_signature"].removeprefix("0x"))
    if not sr25519_verify(f"{nonce}.{hotkey}.{args.hotkey}.{uuid}.{signed_hash}".encode(), signature, hotkey,
                          CRYPTO_SR25519):
        raise http_auth.AuthError("signature mismatch")
    data = json.loads(body)
    inner = hashlib.sha3_256(str(data["messages"]).encode()).hexdigest()  # Prompting's required_hash_fields
    if hashlib.sha3_256(inner.encode()).hexdigest() != signed_hash:
        raise http_auth.AuthError("body hash mismatch")
    if (hotkey, uuid, nonce) in seen_v10:
        raise http_auth.AuthError("replayed nonce")
    seen_v10.add((hotkey, uuid, nonce))
    return {**data, "completion": data["messages"][-1]}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        if "bt_header_dendrite_hotkey" in headers:
            status, payload = 200, verify_v10(headers, body)
        else:
            http_auth.verify(headers, body, method="POST", path=scope["path"], self_hotkey_ss58=args.hotkey,
                             nonce_store=store)
            status, payload = 200, {"completion": json.loads(body)["messages"][-1]}
    except http_auth.AuthError as exc:
        status, payload = 401, {"error": str(exc)}
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, http=args.http)
