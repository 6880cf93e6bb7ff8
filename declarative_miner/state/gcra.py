"""GCRA, the generic cell rate algorithm: a token bucket kept as one number per key, its
"theoretical arrival time". Every store keeps that number and runs this one step atomically."""

from __future__ import annotations

from typing import Optional


def step(tat: Optional[float], now: float, interval: float, tolerance: float) -> tuple[float, Optional[float]]:
    """(seconds to wait, 0 when admitted; the new arrival time to store, None when refused).

    `interval` is the seconds one event uses of the budget, `tolerance` how far ahead of the rate a
    burst may run (a burst of `tolerance / interval + 1` events is admitted at once).
    """
    tat = now if tat is None or tat < now else tat
    if tat - now > tolerance:
        return tat - tolerance - now, None
    return 0.0, tat + interval
