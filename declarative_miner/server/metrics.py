"""Prometheus metrics of one miner, in a registry of its own (several miners may share a process)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Requests by wire format, route and status, their latency, and gauges read at scrape time."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("miner_requests", "Requests answered, by wire format, route and HTTP status",
                                ["wire_format", "route", "status"], registry=self.registry)
        self.latency = Histogram("miner_request_seconds", "Seconds from request to answer (streams: to the end)",
                                 ["wire_format", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple] = {}  # bounded: routes, statuses, formats
        for name, (description, read) in gauges.items():
            self.gauge(name, description, read)

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A gauge whose value `read` gives at scrape time."""
        Gauge(name, description, registry=self.registry).set_function(read)

    def observe(self, wire_format: str, route: str, status: int, seconds: float) -> None:
        key = (wire_format, route, status)
        if (children := self._children.get(key)) is None:  # labels() costs a lock and tuples each time
            children = self._children[key] = (self.requests.labels(wire_format, route, str(status)),
                                              self.latency.labels(wire_format, route))
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
