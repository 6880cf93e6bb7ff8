"""Prompt callables for tests, named by dotted path in `prompt._target_` overrides."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from declarative_miner.prompting import Prompting

release = threading.Event()


def raises(request: Prompting) -> str:
    raise RuntimeError("the model fell over")


def wrong_type(request: Prompting) -> int:
    return 42


def slow(request: Prompting, seconds: float = 5.0) -> str:
    """Blocks a worker thread until `release` is set or `seconds` pass."""
    release.wait(seconds)
    return "slow " + request.messages[-1]


async def async_upper(request: Prompting) -> str:
    await asyncio.sleep(0)
    return request.messages[-1].upper()


def lone_surrogate(request: Prompting) -> str:
    return "caf\ud800"  # text no UTF-8 encoder takes, but JSON can carry escaped


async def process_id(request: Prompting) -> str:
    """Which process answered (tests of several workers tell them apart by it)."""
    return f"{os.getpid()} {request.messages[-1]}"


def hotkey_of_caller(request: Prompting) -> str:
    return request.dendrite.hotkey


def counting(request: Prompting, path: str) -> str:
    """Says how many times it has run, counting in the file at `path` (one per test)."""
    with open(path, "a+") as log:
        log.write("call\n")
        log.seek(0)
        return f"call {len(log.readlines())}"


served: list[str] = []
gate = threading.Event()


def gated(request: Prompting) -> str:
    """Records the order prompts run in; the one saying "gate" holds its slot until `gate` is set."""
    served.append(request.messages[-1])
    if request.messages[-1] == "gate":
        gate.wait(30)
    return f"{request.messages[-1]} after {len(served)} calls"


async def async_words(request: Prompting):
    for word in request.messages[-1].split():
        await asyncio.sleep(0)
        yield word + "\n"


def fails_midway(request: Prompting):
    yield "first "
    raise RuntimeError("lost the model")


stopped: list[str] = []  # prompts that were stopped (cancelled or closed), by their last message


async def waits_forever(request: Prompting) -> str:
    """Never answers by itself; records being stopped."""
    try:
        await asyncio.Event().wait()
    finally:
        stopped.append(request.messages[-1])
    return "unreachable"


async def streams_then_waits(request: Prompting):
    """One chunk, then waits forever; records being stopped."""
    try:
        yield "first\n"
        await asyncio.Event().wait()
    finally:
        stopped.append(request.messages[-1])


def yields_forever(request: Prompting):
    """A plain generator that never ends by itself (tokens from a model, say); records being closed."""
    try:
        while True:
            time.sleep(0.01)
            yield "token "
    finally:
        stopped.append(request.messages[-1])


def never_returns(request: Prompting) -> str:
    """A plain prompt stuck for good: its thread can never be stopped."""
    threading.Event().wait()
    return "unreachable"


def waits_for_file(request: Prompting, path: str) -> str:
    """Writes its pid to `path`.started, blocks until `path` exists (another process may create
    it), then answers."""
    import os
    import pathlib

    pathlib.Path(path + ".started").write_text(str(os.getpid()))
    while not pathlib.Path(path).exists():
        time.sleep(0.05)  # polls the file system: the creator may be another process
    return "after " + request.messages[-1]


class SlowToLoad:
    """A backend whose construction takes `seconds`, as a large model's load does."""

    def __init__(self, seconds: float):
        time.sleep(seconds)

    def __call__(self, request: Prompting) -> str:
        return request.messages[-1]


class FailsToStartInWorkers:
    """Builds (as `mode=validate` and the supervisor do) but cannot start in a forked worker, as a
    backend whose device or server the worker cannot reach."""

    def __init__(self) -> None:
        self.builder = os.getpid()

    async def start(self) -> None:
        if os.getpid() != self.builder:
            raise RuntimeError("cannot open the model server connection in this worker")

    async def __call__(self, request: Prompting) -> str:
        return request.messages[-1]


def paint(request) -> dict:
    """An SN23-style answer: an "image" and what the pipeline was asked, values as they came."""
    return {"image": f"png of {request.prompt} ({request.seed})",
            "response_dict": {"pipeline_params": request.pipeline_params, "model_name": request.model_name}}


def sample(request) -> str:
    """A Targon-style answer: what the nested sampling parameters said."""
    params = request.sampling_params
    return f"{params['temperature']} {params['top_p']} {params['max_new_tokens']} {params['stop']}"


def echo_tensor(request) -> dict:
    """The Tensor back as it came (its buffer arrived as bytes)."""
    assert isinstance(request.tensor["buffer"], bytes)
    return {"echoed": request.tensor}


def measure(request) -> int:
    assert isinstance(request.payload, bytes)
    return len(request.payload)


def count_tags(request) -> int:
    """Mutates its request's default list: a shared default would grow from request to request."""
    request.tags.append("seen")
    request.meta["seen"] = True
    return len(request.tags) + len(request.meta)


produced: list[int] = []  # bytes a streaming prompt has yielded so far, one entry per chunk


async def streams_megabytes(request: Prompting):
    """A hundred 1 MB chunks, as fast as the server takes them."""
    for _ in range(100):
        produced.append(1 << 20)
        yield "x" * (1 << 20)


def answers_megabytes(request: Prompting) -> str:
    """One answer of 8 MB: more than the kernel's socket buffers hold."""
    return "x" * (8 << 20)
