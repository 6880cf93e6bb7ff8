"""The library internals the miner overrides still exist, with the signatures it calls.

`server/http.py` subclasses uvicorn's httptools protocol, `server/serving.py` uvicorn's Server,
and `config.split_sweep` uses Hydra's basic sweeper. pyproject pins each to the minor series
tested; this fails loudly, naming the hook, when an upgrade moves one.
"""

from __future__ import annotations

import inspect
import re

import pytest
import uvicorn
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from declarative_miner.server.http import _GuardedHttpTools
from declarative_miner.server.serving import _Uvicorn

OVERRIDDEN = [
    (HttpToolsProtocol, _GuardedHttpTools, ["connection_made", "data_received", "connection_lost", "on_message_begin",
                                            "on_url", "on_header", "on_headers_complete", "on_response_complete",
                                            "send_400_response"]),
    (uvicorn.Server, _Uvicorn, ["shutdown", "startup", "capture_signals"]),
]


@pytest.mark.parametrize("base, ours, hooks", OVERRIDDEN, ids=["httptools protocol", "uvicorn server"])
def test_every_overridden_hook_exists_upstream_with_the_same_parameters(base, ours, hooks):
    for hook in hooks:
        assert hook in vars(ours), f"{ours.__name__} no longer overrides {hook}: update this list"
        upstream = getattr(base, hook, None)
        assert upstream is not None, f"{base.__module__}.{base.__name__}.{hook} is gone: pin or port server/"
        theirs = list(inspect.signature(upstream).parameters)
        mine = list(inspect.signature(getattr(ours, hook)).parameters)
        assert mine == theirs, f"{base.__name__}.{hook}{theirs} != ours {mine}"


def test_the_attributes_the_protocol_reads_are_set_by_uvicorn():
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.cycle", "self.transport", "self.loop", "self.client", "self.parser"):
        assert attribute in source, f"HttpToolsProtocol no longer sets {attribute}"
    cycle = inspect.getsource(inspect.getmodule(HttpToolsProtocol).RequestResponseCycle)
    for attribute in ("self.more_body", "self.response_complete"):
        assert attribute in cycle, f"uvicorn's RequestResponseCycle no longer sets {attribute}"


def test_a_response_cycle_writes_its_head_once_through_what_ours_wraps():
    # _HeadWithBody stands in for the cycle's transport: it must offer all the cycle calls, and it
    # knows a head by uvicorn's status line, written whole in one call.
    module = inspect.getmodule(HttpToolsProtocol)
    cycle = inspect.getsource(module.RequestResponseCycle)
    assert set(re.findall(r"self\.transport\.(\w+)", cycle)) == {"write", "close", "is_closing"}
    assert 'self.transport.write(b"".join(content))' in cycle
    assert all(line.startswith(b"HTTP/1.1 %d " % status) for status, line in module.STATUS_LINE.items())
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(HttpToolsProtocol.on_headers_complete)


def test_uvicorns_on_header_is_what_ours_repeats():
    # _GuardedHttpTools.on_header does uvicorn's work inline (it runs for every header): lower the
    # name, note `Expect: 100-continue`, append to self.headers. An upgrade that does more fails here.
    body = [line.strip() for line in inspect.getsource(HttpToolsProtocol.on_header).splitlines()[1:]]
    assert body == ["name = name.lower()", 'if name == b"expect" and value.lower() == b"100-continue":',
                    "self.expect_100_continue = True", "self.headers.append((name, value))"], body


def test_hydras_basic_sweeper_still_splits_arguments():
    assert "split_arguments" in vars(BasicSweeper)
    assert list(inspect.signature(BasicSweeper.split_arguments).parameters) == ["overrides", "max_batch_size"]
