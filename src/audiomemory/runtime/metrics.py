"""Prometheus metrics of one service: requests, latency, in-flight calls, errors by code.

Each running service owns its registry, so several services can live in one process (the
embedded default, the tests) without their counters colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        labels = ["service", "method"]
        self.requests = Counter(
            "audiomemory_requests", "RPCs finished, by status code.", [*labels, "code"], registry=self.registry
        )
        self.errors = Counter(
            "audiomemory_errors", "RPCs that ended with a non-OK status.", [*labels, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "audiomemory_request_seconds", "RPC wall time.", labels, buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.in_flight = Gauge("audiomemory_in_flight", "RPCs in progress.", labels, registry=self.registry)
        self.ready = Gauge(
            "audiomemory_model_ready", "1 once the model has loaded.", ["service"], registry=self.registry
        )
        self.ready.labels(service).set(0)

    def request_count(self, method: str | None = None) -> int:
        """RPCs finished so far (any code), for ``method`` (its short name, e.g. "Separate") or all."""
        total = 0.0
        for metric in self.registry.collect():
            if metric.name != "audiomemory_requests":
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total") and (method is None or sample.labels["method"] == method):
                    total += sample.value
        return int(total)
