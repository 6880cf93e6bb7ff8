"""How long a signed request stays fresh, from signed values only, for every wire format."""

from __future__ import annotations

from ..errors import NotAuthenticated

MAX_DIGITS = 20  # a nanosecond clock has 19; longer numbers are refused before anything parses them


def parse_number(text: str, what: str) -> int:
    """A nonce or timestamp header as an int, or `NotAuthenticated` saying it is not one."""
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS):  # int() would take ² or 5,000 digits
        raise NotAuthenticated(f"{what} must be a decimal number of at most {MAX_DIGITS} digits")
    return int(text)


def check_fresh(nonce_ns: int, now_ns: int, *, max_age: float, allowed_skew: float, fence_ns: int,
                what: str = "nonce") -> None:
    """Refuse a signed time (`what`: the nonce, or Epistula's timestamp) outside the freshness window,
    or signed before the replay store started (see state/memory.py)."""
    if now_ns - nonce_ns > max_age * 1e9:
        raise NotAuthenticated(f"stale request: signed {(now_ns - nonce_ns) / 1e9:.2f} s ago, "
                               f"more than {max_age:g} s")
    if nonce_ns - now_ns > allowed_skew * 1e9:
        raise NotAuthenticated(f"the {what} is {(nonce_ns - now_ns) / 1e9:.2f} s in the future, "
                               f"more than {allowed_skew:g} s (axon.allowed_skew): is the caller's clock right?")
    check_fence(nonce_ns, fence_ns)


def check_fence(nonce_ns: int, fence_ns: int) -> None:
    """Refuse what was signed before a replay store that keeps nothing across restarts started."""
    if nonce_ns < fence_ns:
        raise NotAuthenticated("signed before the miner started, and its replay store keeps nothing across "
                               "restarts (state.store=memory): sign the request again")
