"""How btauth/1 and Epistula callers are answered: JSON, and server-sent events for streams."""

from __future__ import annotations

import json

from ..errors import RequestError


class JsonReplies:
    """Replies in the project's own format: the request's fields with its outputs filled,
    `{"error", "reason"}` on failure, and for a stream `data: {"chunk": ...}` events closed by
    `event: done` (the whole text) or `event: error`."""

    @staticmethod
    def success(reply: dict, body: dict, process_time: float) -> tuple[dict, dict]:
        return reply, {}

    @staticmethod
    def failure(error: RequestError) -> tuple[dict, dict]:
        return {"error": error.error, "reason": error.reason}, error.headers

    @staticmethod
    def stream_headers() -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    @staticmethod
    def frame(chunk: str) -> bytes:
        """One server-sent event per chunk: `data: {"chunk": ...}`."""
        return b"data: " + json.dumps({"chunk": chunk}).encode() + b"\n\n"

    @staticmethod
    def final(completion: str) -> bytes:
        """The closing event carries the whole completion."""
        return b"event: done\ndata: " + json.dumps({"completion": completion}).encode() + b"\n\n"

    @staticmethod
    def stream_error(error: RequestError) -> bytes:
        payload = {"status": error.status, "error": error.error, "reason": error.reason}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
