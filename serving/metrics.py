"""Prometheus metrics (prometheus_client), one registry per app so tests and apps do not share state.

Under gunicorn every worker is its own process: serving/gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the workers start, prometheus_client then keeps each
worker's values in files there, and /metrics adds up all workers (MultiProcessCollector)
whichever worker answers. Without it (tests, a single process) the app's own registry is served.

Label values are bounded: the endpoint is a route's rule (a fixed set; unmatched paths are
"other"), the method one of HTTP's standard methods ("other" for anything made up), so
clients cannot grow /metrics by sending new names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


@dataclass
class ServiceMetrics:
    multiprocess_dir: Path | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("escalation_risk_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("escalation_risk_request_seconds", "request latency by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.scores = Counter("escalation_risk_scores", "tickets scored by band", ["band"], registry=self.registry)
        # One sample per live worker (pid label) in multi-process mode: a partial reload shows.
        self.model_info = Gauge("escalation_risk_model_info", "the loaded model version (value 1)",
                                ["version"], registry=self.registry, multiprocess_mode="liveall")
        self.reloads = Counter("escalation_risk_model_reloads", "model reloads by outcome", ["outcome"],
                               registry=self.registry)
        self._version: str | None = None
        self._request_children: dict[tuple, tuple] = {}
        self._score_children: dict[str, object] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request and its latency; the labelled children are looked up once per label set
        (`labels()` takes a lock and builds keys, which costs a single-ticket request noticeably)."""
        if method not in METHODS:
            method = OTHER
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(endpoint=endpoint, method=method, status=str(status)),
                self.latency.labels(endpoint=endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count_scores(self, band: str, n: int = 1) -> None:
        child = self._score_children.get(band)
        if child is None:
            child = self._score_children[band] = self.scores.labels(band=band)
        child.inc(n)

    def set_model(self, version: str | None) -> None:
        """The loaded version's sample is 1; a replaced one drops to 0 (files cannot forget a label)."""
        if self._version is not None and self._version != version:
            self.model_info.labels(version=self._version).set(0)
        if version:
            self.model_info.labels(version=version).set(1)
        self._version = version

    def exposition(self) -> bytes:
        """The text format: summed over all workers in multi-process mode, else this app's registry."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)
