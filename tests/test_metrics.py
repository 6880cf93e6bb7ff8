"""/metrics as Prometheus reads it (prometheus_client's own parser of the text format)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from declarative_miner.server.metrics import Metrics


def scrape(metrics: Metrics) -> dict:
    return {family.name: family for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())}


def test_requests_and_latency_read_back_as_counted_with_each_bound_inclusive():
    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.0011, 0.3, 31.0):  # 0.001 is a bound: it counts in le="0.001"
        metrics.observe("btauth", "/Prompting", 200, seconds)
    metrics.observe("v10", "/Prompting", 409, 0.002)
    metrics.queued.inc(3)
    families = scrape(metrics)
    requests = {(s.labels["wire_format"], s.labels["status"]): s.value for s in families["miner_requests"].samples
                if s.name == "miner_requests_total"}
    assert requests == {("btauth", "200"): 5, ("v10", "409"): 1}
    samples = [s for s in families["miner_request_seconds"].samples if s.labels["wire_format"] == "btauth"]
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    assert (buckets["0.001"], buckets["0.0025"], buckets["0.25"], buckets["0.5"], buckets["30.0"], buckets["+Inf"]) \
        == (2, 3, 3, 4, 4, 5)
    totals = {s.name: s.value for s in samples if not s.name.endswith("_bucket")}
    assert totals["miner_request_seconds_count"] == 5
    assert abs(totals["miner_request_seconds_sum"] - 31.3026) < 1e-9
    assert families["miner_queue_depth"].samples[0].value == 3
    assert not any(s.name.endswith("_created") for family in families.values() for s in family.samples)
