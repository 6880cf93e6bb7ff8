"""The floor of this stack: a bare uvicorn ASGI app that verifies btauth/1 and echoes.

    python benchmarks/floor.py --port 8101 --hotkey <ss58 the requests are signed for>
"""

import argparse
import json

import uvicorn
from bittensor import http_auth

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--hotkey", required=True)
args = parser.parse_args()
store = http_auth.InMemoryNonceStore(retention=13.0)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        http_auth.verify(headers, body, method="POST", path=scope["path"], self_hotkey_ss58=args.hotkey,
                         nonce_store=store)
        status, payload = 200, {"completion": json.loads(body)["messages"][-1]}
    except http_auth.AuthError as exc:
        status, payload = 401, {"error": str(exc)}
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
