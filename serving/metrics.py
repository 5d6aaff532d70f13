"""Prometheus metrics (prometheus_client), one registry per app so tests and apps do not share state."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("escalation_risk_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("escalation_risk_request_seconds", "request latency by endpoint",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.scores = Counter("escalation_risk_scores", "tickets scored by band", ["band"], registry=self.registry)
        self.model_info = Gauge("escalation_risk_model_info", "the loaded model version (value 1)",
                                ["version"], registry=self.registry)
        self.reloads = Counter("escalation_risk_model_reloads", "model reloads by outcome", ["outcome"],
                               registry=self.registry)

    def set_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version=version).set(1)
