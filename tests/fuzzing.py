"""Hostile HTTP requests for the miner's ASGI app, shared by the fuzz test and benchmarks/fuzz.py.

A case is a method, a path, header pairs and a body, generated to be mostly wrong in the ways
an attacker or a broken client is: random bytes, invalid or non-UTF-8 JSON, deep nesting, huge
strings, wrong types, and auth headers of both protocols that are present but bogus.
"""

from __future__ import annotations

import asyncio
import json

from hypothesis import strategies as st

AUTH_HEADERS = ["x-bittensor-version", "x-bittensor-hotkey", "x-bittensor-nonce", "x-bittensor-signature",
                "x-bittensor-receiver", "x-bittensor-crypto", "bt_header_dendrite_hotkey", "bt_header_dendrite_nonce",
                "bt_header_dendrite_signature", "bt_header_dendrite_uuid", "bt_header_dendrite_version",
                "computed_body_hash", "timeout", "content-length", "content-type"]
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
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    try:
        return start["status"], json.loads(payload)
    except ValueError:
        return start["status"], None


def signed(case_protocol: str, body_or_fields, keypair, receiver: str) -> tuple:
    """A correctly signed case carrying a hostile body (btauth/1) or hostile fields (v10)."""
    from bittensor import http_auth

    from declarative_miner.server import v10

    if case_protocol == "btauth":
        headers = http_auth.sign(keypair, method="POST", path="/Prompting", body=body_or_fields, receiver_ss58=receiver)
        return "POST", "/Prompting", list(headers.items()), body_or_fields
    roles, messages = body_or_fields
    headers, body = v10.sign(keypair, receiver=receiver, roles=roles, messages=messages, uuid="fuzz")
    return "POST", "/Prompting", list(headers.items()), body


signed_cases = st.one_of(st.tuples(st.just("btauth"), bodies),
                         st.tuples(st.just("v10"), st.tuples(json_values, json_values)))
