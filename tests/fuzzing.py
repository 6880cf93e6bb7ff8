"""Hostile HTTP requests for the miner's ASGI app, shared by the fuzz test and benchmarks/fuzz.py.

A case is a method, a path, header pairs and a body, generated to be mostly wrong in the ways
an attacker or a broken client is: random bytes, invalid or non-UTF-8 JSON, deep nesting, huge
strings, wrong types, and auth headers of both protocols that are present but bogus.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

from hypothesis import strategies as st

AUTH_HEADERS = ["x-bittensor-version", "x-bittensor-hotkey", "x-bittensor-nonce", "x-bittensor-signature",
                "x-bittensor-receiver", "x-bittensor-crypto", "bt_header_dendrite_hotkey", "bt_header_dendrite_nonce",
                "bt_header_dendrite_signature", "bt_header_dendrite_uuid", "bt_header_dendrite_version",
                "computed_body_hash", "timeout", "content-length", "content-type"]
INVALID_FIELD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
HOTKEYS = ["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "not-a-hotkey", "", "5" * 48]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"roles": json_values, "messages": json_values}).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 200_000).map(lambda n: json.dumps({"roles": ["user"], "messages": ["x" * n]}).encode()),
    st.just(b'{"roles": ["user"], "messages": ["\\ud800"]}'),
)
header_values = st.one_of(st.sampled_from(HOTKEYS), st.text(max_size=40).map(lambda t: t.encode("utf-8", "replace")
                                                                             .decode("latin-1")),
                          st.integers().map(str), st.just("1"), st.just("0x" + "00" * 64))
cases = st.tuples(
    st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"]),
    st.sampled_from(["/Prompting", "/StreamPrompting", "/health", "/", "/Prompting/x", "/%00", "/" + "a" * 500]),
    st.lists(st.tuples(st.sampled_from(AUTH_HEADERS), header_values), max_size=8),
    bodies,
)


async def send_case(app, case) -> tuple[int, dict | None]:
    """Drive `app` with one case; returns the status and the decoded JSON body (None if not JSON)."""
    method, path, headers, body = case
    messages: list[dict] = []
    parts = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive():
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],  # as servers do
             "client": ("127.0.0.1", 40000)}
    await asyncio.wait_for(app(scope, receive, send), 30)
    start = next(m for m in messages if m["type"] == "http.response.start")
    for name, value in start["headers"]:  # what a real server refuses to send (RFC 9110 field-value)
        assert not INVALID_FIELD_VALUE.search(value), (name, value)
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    try:
        return start["status"], json.loads(payload)
    except ValueError:
        return start["status"], None


def signed(case_protocol: str, body_or_fields, keypair, receiver: str) -> tuple:
    """A correctly signed case carrying a hostile body (btauth/1) or hostile fields (v10)."""
    from bittensor import http_auth

    from declarative_miner.auth import v10

    if case_protocol == "btauth":
        headers = http_auth.sign(keypair, method="POST", path="/Prompting", body=body_or_fields, receiver_ss58=receiver)
        return "POST", "/Prompting", list(headers.items()), body_or_fields
    roles, messages = body_or_fields
    headers, body = v10.sign(keypair, receiver=receiver, roles=roles, messages=messages, uuid="fuzz")
    return "POST", "/Prompting", list(headers.items()), body


signed_cases = st.one_of(st.tuples(st.just("btauth"), bodies),
                         st.tuples(st.just("v10"), st.tuples(json_values, json_values)))


# -- Raw bytes for a real server: the request line and headers too, where the hostile-header
#    code (server/http.py) and uvicorn's parser live, which the in-process driver never reaches.

_tokens = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"BREW", b"", b"G\x00T", b"POST" * 50])
_targets = st.sampled_from([b"/health", b"/Prompting", b"/StreamPrompting", b"*", b"http://x/Prompting",
                            b"//Prompting", b"/%00", b"/" + b"a" * 40000, b"/Prompting?x=1", b"", b"/\xff"])
_versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"", b"http/1.1"])
_raw_headers = st.lists(st.one_of(
    st.tuples(st.sampled_from([h.encode() for h in AUTH_HEADERS] + [b"transfer-encoding", b"host", b"connection",
                                                                    b"expect", b"X-Big"]),
              st.one_of(header_values.map(lambda v: v.encode("latin-1")),
                        st.sampled_from([b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"-1",
                                         b"100000000", b"0", b"close", b"100-continue", b"a" * 40000]))),
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40))), max_size=10)
_endings = st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b"", b"\r\n\r\n0\r\n\r\n", b"\r\n\r\nGET /health HTTP/1.1\r\n\r\n"])
raw_requests = st.tuples(_tokens, _targets, _versions, _raw_headers, _endings, bodies).map(
    lambda p: p[0] + b" " + p[1] + b" " + p[2] + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in p[3])
    + p[4] + p[5])


def send_raw(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send `raw` on a fresh connection and read the first response whole, or until the server
    closes (b"" if it answered nothing). A hang past `timeout` raises: every connection must end.
    (Our side is not half-closed: uvicorn drops a connection at EOF, answer and all.)"""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            while not _complete(received) and (chunk := sock.recv(65536)):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


def _complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        return body.endswith(b"0\r\n\r\n")
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False  # no length: the body ends when the server closes


def statuses_of(answer: bytes) -> list[int]:
    """The status of every response in `answer` (pipelined requests get several)."""
    return [int(code) for code in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ", answer)]
