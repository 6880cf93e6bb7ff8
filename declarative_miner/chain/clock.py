"""Whether this machine's clock agrees with the chain's: btauth/1 and v10 refuse a request signed
`axon.max_age` seconds ago or `axon.allowed_skew` ahead by this clock, so a skewed clock silently
refuses every validator. The chain's clock is its newest block's timestamp, which trails real time
by up to a block, so the check tells a skew beyond a block's time (12 s on finney) and no finer:
keep the machine on NTP (`timedatectl`)."""

from __future__ import annotations

import time
from typing import Callable, Optional


def clock_problem(now: float, chain_time: float, block_time: float, allowed_skew: float, max_age: float) -> Optional[str]:
    """Why this clock (`now`) cannot be trusted against the chain's newest block (`chain_time`), or None."""
    lag = now - chain_time
    if lag < -allowed_skew:
        return (f"this machine's clock is {-lag:.0f} s behind the chain's newest block: validators' requests "
                f"look signed in the future and are refused past {allowed_skew:g} s (set the clock: NTP)")
    if lag > block_time + max_age:
        return (f"this machine's clock is {lag - block_time:.0f} s or more ahead of the chain's newest block: "
                f"validators' requests look older than {max_age:g} s and are refused (set the clock: NTP)")
    return None


def check_clock(read: Callable[[], tuple[float, float]], allowed_skew: float, max_age: float,
                observe: Callable[[float], None] = lambda lag: None) -> Optional[str]:
    """`clock_problem` against `read()` (the chain's newest block timestamp and block time, blocking);
    `observe` is told this clock's lag behind the chain."""
    chain_time, block_time = read()
    now = time.time()
    observe(now - chain_time)
    return clock_problem(now, chain_time, block_time, allowed_skew, max_age)
