"""An OpenAI-compatible model server that streams at a real model's pace and computes nothing: each
answer is `--tokens` words, one every `--pace` seconds, so many answers are produced at once (as a
batching server does) and the only CPU spent is HTTP's.

    python benchmarks/paced_openai.py --port 8200 --pace 0.03 --tokens 32

It answers what the openai recipe asks: `GET /v1/models` and `POST /v1/chat/completions`, plain or
streamed (server-sent events ending in `data: [DONE]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvicorn

MODEL = "paced"


def chunk(content: str | None, finish: str | None = None) -> bytes:
    """One streamed `chat.completion.chunk` event."""
    delta = {"content": content} if content is not None else {}
    event = {"id": "paced", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def completion(text: str) -> bytes:
    """One plain `chat.completion`."""
    return json.dumps({"id": "paced", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def app_for(pace: float, tokens: int):
    """The ASGI app answering `tokens` words, one each `pace` seconds."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if scope["path"].endswith("/models"):
            return await reply(send, 200, b"application/json", json.dumps({"data": [{"id": MODEL}]}).encode())
        asked = json.loads(body or b"{}")
        count = min(tokens, asked.get("max_tokens") or tokens)
        if not asked.get("stream"):
            await asyncio.sleep(pace * count)
            return await reply(send, 200, b"application/json", completion(" ".join(["word"] * count)))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(count):
            await asyncio.sleep(pace)
            await send({"type": "http.response.body", "body": chunk("word "), "more_body": True})
        await send({"type": "http.response.body", "body": chunk(None, "stop") + b"data: [DONE]\n\n"})

    return app


async def reply(send, status: int, kind: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pace", type=float, default=0.03, help="seconds between tokens")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    uvicorn.run(app_for(args.pace, args.tokens), host="127.0.0.1", port=args.port, log_level="warning")
