"""Prometheus metrics of one miner, in a registry of its own (several miners may share a process)."""

from __future__ import annotations

import bisect
import itertools
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Requests by wire format, route and status, their latency, and gauges read at scrape time.

    A request is counted in plain Python numbers, and prometheus_client reads them at scrape time
    (a custom collector): its own Counter and Histogram take a lock for each of the three numbers a
    request changes, 12,000 instructions a request more (docs/performance.md). `observe` and
    `render` are called on the serving loop alone.
    """

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]):
        self.registry = CollectorRegistry()
        self._requests: dict[tuple[str, str, int], int] = {}  # bounded: routes, statuses, formats
        # (wire format, route) -> requests in each latency bucket (the last: above them all), then their sum
        self._latency: dict[tuple[str, str], list[float]] = {}
        self.registry.register(self)
        for name, (description, read) in gauges.items():
            self.gauge(name, description, read)

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A gauge whose value `read` gives at scrape time."""
        Gauge(name, description, registry=self.registry).set_function(read)

    def observe(self, wire_format: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (wire_format, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if (latency := self._latency.get(key[:2])) is None:
            latency = self._latency[key[:2]] = [0] * (len(LATENCY_BUCKETS) + 2)
        latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        latency[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        """What a scrape reads (prometheus_client's collector protocol)."""
        requests = CounterMetricFamily("miner_requests", "Requests answered, by wire format, route and HTTP status",
                                       labels=["wire_format", "route", "status"])
        for (wire_format, route, status), count in self._requests.items():
            requests.add_metric([wire_format, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("miner_request_seconds", "Seconds from request to answer (streams: to the end)",
                                        labels=["wire_format", "route"])
        bounds = [*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]  # as Histogram names them
        for labels, counts in self._latency.items():
            latency.add_metric(list(labels), list(zip(bounds, itertools.accumulate(counts[:-1]))), counts[-1])
        yield latency

    def render(self) -> bytes:
        return generate_latest(self.registry)
