"""Prometheus metrics of one miner, served on a listener of their own (never on the public port).

prometheus_client's own Counter, Histogram and Gauge, in a registry per miner (several may share a
process, as in tests). With several worker processes they live in prometheus_client's multiprocess
mode (`PROMETHEUS_MULTIPROC_DIR`, set by the command line before anything imports prometheus_client),
and the listener in the supervising process adds up the workers' files.
"""

from __future__ import annotations

import os
from typing import Optional

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, multiprocess,
                               start_http_server)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it at import (cli.py sets it)


def multiprocess_mode() -> bool:
    """Whether metrics are kept in files the workers share (prometheus_client's multiprocess mode)."""
    return MULTIPROCESS_DIRECTORY in os.environ


class Metrics:
    """What `/metrics` reports of one miner."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series: a scrape reads counts, not their start times
        self.registry = r = CollectorRegistry()
        self.requests = Counter("miner_requests", "Requests answered, by wire format, route and HTTP status",
                                ["wire_format", "route", "status"], registry=r)
        self.latency = Histogram("miner_request_seconds", "Seconds from request to answer (streams: to the end)",
                                 ["wire_format", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("miner_inflight", "Requests anywhere in the pipeline", registry=r,
                              multiprocess_mode="livesum")
        self.queued = Gauge("miner_queue_depth", "Requests waiting for a slot", registry=r, multiprocess_mode="livesum")
        self.overrunning = Gauge("miner_overrunning_prompts", "Prompts still running in threads after their "
                                 "request ended", registry=r, multiprocess_mode="livesum")
        self.cache_hits = Counter("miner_cache_hits", "Requests answered from the prompt cache", registry=r)
        self.tokens = Counter("miner_tokens", "Tokens the model reported, by kind (prompt, completion)", ["kind"],
                              registry=r)
        self.metagraph_block = Gauge("miner_metagraph_block", "Block of the metagraph in use", registry=r,
                                     multiprocess_mode="max")
        self.metagraph_time = Gauge("miner_metagraph_timestamp_seconds", "When the metagraph in use was read "
                                    "(seconds since the epoch)", registry=r, multiprocess_mode="max")

        self.validator_requests = Counter("miner_validator_requests", "Requests of each validator (a permit "
                                          "holder), by hotkey and HTTP status", ["validator", "status"], registry=r)
        self.ready = Gauge("miner_ready", "1 while every readiness check passes (GET /ready)", registry=r,
                           multiprocess_mode="min")
        self.clock_lag = Gauge("miner_clock_lag_seconds", "This clock minus the chain's newest block timestamp "
                                  "(0 to a block's time when both are right)", registry=r, multiprocess_mode="max")
        # This miner's standing on its subnet, from each metagraph read: is it earning?
        # Keyed as chain/live.py's `standing()` names them.
        self.standing = {key: Gauge(name, text, registry=r, multiprocess_mode="max") for key, name, text in (
            ("registered", "miner_registered", "1 while this hotkey is registered on the subnet"),
            ("uid", "miner_uid", "This miner's uid (-1: not registered)"),
            ("incentive", "miner_incentive", "This miner's incentive (0 to 1)"),
            ("emission", "miner_emission", "This miner's emission at the last read, in the subnet's token"),
            ("trust", "miner_trust", "This miner's trust (0 to 1)"),
            ("last_update", "miner_last_update_block", "Block of this miner's last update on chain"))}

    def stand(self, uid: Optional[int], **values: float) -> None:
        """Set the standing gauges from a metagraph read: `uid` None when not registered."""
        self.standing["registered"].set(uid is not None)
        self.standing["uid"].set(-1 if uid is None else uid)
        for key, value in values.items():
            self.standing[key].set(value)

    def observe(self, wire_format: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(wire_format, route, str(status)).inc()
        self.latency.labels(wire_format, route).observe(seconds)


def serve_metrics(metrics: Optional[Metrics], host: str, port: int):
    """Start the metrics listener on `host:port` in a thread; returns (server, thread) to shut down.

    In multiprocess mode (several workers) it reads the workers' files, so `metrics` may be None."""
    registry = metrics.registry if metrics is not None and not multiprocess_mode() else CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    return start_http_server(port, addr=host, registry=registry)
