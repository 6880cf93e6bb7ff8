"""An address flooding the miner with requests it must refuse is shed: over a real socket from
127.0.0.2 (an attacker's address), while the validator at 127.0.0.1 is served."""

from __future__ import annotations

from declarative_miner.schema import MAX_SHED_FOR
from declarative_miner.server.shedding import Shedding
from declarative_miner.state.memory import MemoryCells

from .test_open_internet import connect, read_response, request_bytes

UNSIGNED = request_bytes("POST", "/Prompting", {"Content-Length": "2"}, b"{}")


def _flood(miner, refusals: int):
    """A keep-alive connection from the attacker's address, refused `refusals` times (401)."""
    flood = connect(miner.port)
    statuses = []
    for _ in range(refusals):
        flood.sendall(UNSIGNED)
        statuses.append(read_response(flood)[0])
    assert statuses == [401] * refusals
    return flood


def _answered_within(sock, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return bool(sock.recv(1))
    except TimeoutError:
        return False


def test_a_flooding_address_is_not_read_while_shed_and_the_validator_is_served(make_miner, client_for):
    with make_miner("axon.max_refusals_per_ip=20", "axon.shed_for=30") as miner:
        flood = _flood(miner, 21)  # the 21st refusal within a second sheds the address for 30 s
        flood.sendall(UNSIGNED)
        fresh = connect(miner.port)  # a new connection from the shed address is not read either
        fresh.sendall(UNSIGNED)
        served = client_for(miner).prompt(["served while the flood is shed"])
        held = [_answered_within(sock, 1.0) for sock in (flood, fresh)]
        flood.close(), fresh.close()
    assert (served.status, served.completion) == (200, "served while the flood is shed")
    assert held == [False, False]


def test_what_a_shed_address_sent_is_answered_when_its_cool_down_ends(make_miner):
    with make_miner("axon.max_refusals_per_ip=20", "axon.shed_for=0.2") as miner:
        flood = _flood(miner, 21)
        flood.sendall(UNSIGNED)  # held, not lost
        later = read_response(flood)
        flood.close()
    assert later[0] == 401


def test_a_verified_callers_refusals_never_shed_it(make_miner, client_for):
    """409s and 403s after verification are the caller's own business: its address stays served."""
    with make_miner("axon.max_refusals_per_ip=5") as miner:
        client = client_for(miner)
        assert client.prompt(["once"]).status == 200
        duplicates = [client.prompt(["once"]).status for _ in range(20)]
        with connect(miner.port, source="127.0.0.1") as sock:
            sock.sendall(request_bytes("GET", "/health", {}))
            health = read_response(sock)[0]
    assert duplicates == [409] * 20 and health == 200


def test_a_validators_malformed_signed_bodies_never_shed_its_address(make_miner, hotkeys):
    """btauth/1 signs the raw bytes, so a body that is not JSON is refused (422) after its signer is
    verified: the validator's own doing, never counted against its address."""
    from bittensor import http_auth

    def signed(body: bytes) -> bytes:
        headers = http_auth.sign(hotkeys["dev-validator"], method="POST", path="/Prompting", body=body,
                                 receiver_ss58=miner.hotkey)
        return request_bytes("POST", "/Prompting", {**headers, "Content-Length": len(body)}, body)

    with make_miner("axon.max_refusals_per_ip=5", "axon.shed_for=30") as miner:
        with connect(miner.port) as sock:  # 127.0.0.2: the validator on its own host
            malformed = []
            for _ in range(12):
                sock.sendall(signed(b"{not json"))
                malformed.append(read_response(sock)[0])
            sock.sendall(signed(b'{"roles": ["user"], "messages": ["still served"]}'))
            sock.settimeout(2.0)
            served = read_response(sock)
    assert malformed == [422] * 12
    assert served[0] == 200 and b"still served" in served[2]


def test_the_cool_down_doubles_for_a_repeat_offender_and_memory_stays_bounded():
    now = [0.0]
    shedding = Shedding(2, first=1.0, cells=MemoryCells(100_000, clock=lambda: now[0]), clock=lambda: now[0])
    for _ in range(3):
        shedding.refused("10.0.0.1")
    assert shedding.shed_for("10.0.0.1") == 1.0
    now[0] = 1.5  # the cool-down is over; the address floods again
    for _ in range(3):
        shedding.refused("10.0.0.1")
    assert shedding.shed_for("10.0.0.1") == 2.0
    for step in range(12):  # and again, and again: never longer than the maximum
        now[0] += MAX_SHED_FOR + 1
        for _ in range(3):
            shedding.refused("10.0.0.1")
    assert shedding.shed_for("10.0.0.1") == MAX_SHED_FOR
    for i in range(1000):  # many addresses shed once, long ago, are forgotten
        for _ in range(3):
            shedding.refused(f"10.1.{i // 256}.{i % 256}")
    now[0] += 10 * MAX_SHED_FOR
    shedding.refused("10.0.0.2")
    assert shedding.tracked == 0  # the cool-downs of long ago are forgotten
    assert Shedding(0).shed_for("10.0.0.1") == 0.0

