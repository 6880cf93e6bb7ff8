"""A closed-loop HTTP load generator: pre-signed requests, keep-alive connections, several processes;
or paced, each connection sending at a set rate (never more than one request outstanding).

Each process signs its whole batch before it starts sending (so signing never competes with the
server for time), then runs its share of the connections; each connection sends its requests one
after another. It reports latencies and statuses, and its own CPU time, so a run can show the
generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from bittensor import http_auth

from declarative_miner.auth import v10
from declarative_miner.wallet import open_wallet

TICK = os.sysconf("SC_CLK_TCK")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Server:
    """A server process on loopback, with its CPU time and RSS read from /proc."""

    def __init__(self, name: str, command: list[str], port: int, env: dict):
        self.name, self.port = name, port
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.1)

    def cpu(self) -> float:
        """CPU seconds of the server and its worker processes (`axon.workers`)."""
        total, pids = 0, [self.process.pid]
        while pids:
            pid = pids.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # it ended meanwhile
                continue
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def free_port() -> int:
    """A port nothing listens on now, for a server under test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Job:
    """What one generator process sends: `connections` x `per_connection` requests."""

    port: int
    protocol: str  # btauth or v10
    wallets: str
    wallet: str  # the caller; "a,b,c" spreads the connections over several callers
    receiver: str  # the miner's hotkey
    connections: int
    per_connection: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    source: str = "127.0.0.1"  # the local address to connect from (127.0.0.2 stands for another host); "a,b": by turns
    forge: bool = False  # claim the caller's hotkey with a signature of zeros (401-bound)
    size: int = 0  # pad each prompt to this many characters
    pace: float = 0.0  # seconds from one of a connection's requests to its next (0: as soon as answered)


def _http(port: int, headers: dict, body: bytes) -> bytes:
    head = ["POST /Prompting HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    if not any(k.lower() == "content-type" for k in headers):
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def requests_for(job: Job, connection: int) -> list[bytes]:
    """One connection's requests, each a distinct prompt (the cache must not short-cut them)."""
    # Distinct nonces even when several processes sign for one hotkey in the same nanosecond.
    nonces = itertools.count(time.time_ns() // 1000 * 1000 + os.getpid() % 1000, 1000)
    callers = job.wallet.split(",")
    keypair = open_wallet(callers[connection % len(callers)], "default", job.wallets).hotkey
    uid, out = str(uuid.uuid1()), []
    for i in range(job.per_connection):
        messages = [f"bench {job.tag}-{connection}-{i} ".ljust(job.size, "x")]
        if job.protocol == "v10":
            headers, body = v10.sign(keypair, receiver=job.receiver, roles=["user"], messages=messages, uuid=uid)
        else:
            body = json.dumps({"roles": ["user"], "messages": messages}).encode()
            headers = http_auth.sign(keypair, method="POST", path="/Prompting", body=body,
                                     receiver_ss58=job.receiver, nonce_ns=next(nonces))
        if job.forge:
            signature = "bt_header_dendrite_signature" if job.protocol == "v10" else http_auth.HEADER_SIGNATURE
            headers = {**headers, signature: "0x" + "00" * 64}
        out.append(_http(job.port, headers, body))
    return out


RESET = 0  # the status recorded for a connection the server reset mid-request


async def _read_response(reader: asyncio.StreamReader) -> int | None:
    """The status of one response, or None when the server had closed the connection. (One read
    of the whole head, not a line at a time: the generator shares the cores with the servers.)"""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    found = _CONTENT_LENGTH.search(head)
    await reader.readexactly(int(found.group(1)) if found else 0)
    return int(head.split(None, 2)[1])


async def _connection(port: int, source: str, requests: list[bytes], results: list, pace: float) -> None:
    async def connect():
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=2**21)

    reader, writer = await connect()
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        for raw in requests:
            if pace:  # at a set rate: a server's CPU per request compared at the same load
                due += pace
                await asyncio.sleep(due - loop.time())
            started = time.perf_counter()
            writer.write(raw)
            try:
                while (status := await _read_response(reader)) is None:
                    # The miner ends a connection whose body it did not read (a refusal before the body):
                    # reconnect and send again, as an HTTP client does; the time counts.
                    writer.close()
                    reader, writer = await connect()
                    writer.write(raw)
            except (ConnectionResetError, BrokenPipeError):
                # Cut off while still sending a body past its bound: the refusal is the reset.
                status = RESET
            results.append((time.perf_counter() - started, status))
            if status == RESET or reader.at_eof():
                writer.close()
                reader, writer = await connect()
    finally:
        writer.close()


def _run(index: int, job: Job, start_at: float, queue) -> None:
    batches = [requests_for(job, c) for c in range(job.connections)]
    results: list = []
    cpu = os.times()
    # All generator processes start together, after every one has signed its batch.
    time.sleep(max(0.0, start_at - time.time()))

    async def main() -> None:
        sources = job.source.split(",")
        await asyncio.gather(*(_connection(job.port, sources[c % len(sources)], batch, results, job.pace)
                               for c, batch in enumerate(batches)))

    uvloop.run(main())  # the servers' event loop: the generator takes less of the shared cores
    used = os.times()
    queue.put((index, results, used.user + used.system - cpu.user - cpu.system))


def run(jobs: list[Job], sign_seconds: float = 3.0, background: int = 0) -> tuple[list[list], float, float]:
    """Run the jobs in one process each, all starting together; returns
    ([(latency, status) per request] per job, wall seconds of the run, generator CPU seconds).

    The first `background` jobs are load around the measured ones (a flood): once the others are
    done they are stopped, and report nothing."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + sign_seconds
    processes = [context.Process(target=_run, args=(i, job, start_at, queue)) for i, job in enumerate(jobs)]
    for process in processes:
        process.start()
    outcomes = []
    while sum(index >= background for index, _, _ in outcomes) < len(jobs) - background:
        outcomes.append(queue.get())
    ended = time.time()
    for index, process in enumerate(processes):
        if index < background and index not in {o[0] for o in outcomes}:
            process.terminate()
        process.join()
    done = {index: results for index, results, _ in outcomes}
    per_job = [done.get(index, []) for index in range(len(jobs))]
    return per_job, ended - start_at, sum(cpu for _, _, cpu in outcomes)
