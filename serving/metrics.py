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
        # The live view (serving/monitoring.py): the most recent value any process computed.
        health = {"registry": self.registry, "multiprocess_mode": "mostrecent"}
        self.score_psi = Gauge("escalation_risk_score_psi", "PSI of the score against the training distribution",
                               **health)
        self.feature_psi = Gauge("escalation_risk_feature_psi", "PSI of each feature against the training distribution",
                                 ["feature"], **health)
        self.calibration_ece = Gauge("escalation_risk_calibration_ece",
                                     "expected calibration error in the newest judged window of outcomes", **health)
        self.roc_auc = Gauge("escalation_risk_roc_auc", "ROC-AUC in the newest judged window of outcomes", **health)
        self.band_rate = Gauge("escalation_risk_band_realised_rate", "realised escalation rate per band",
                               ["band"], **health)
        self.alert_precision = Gauge("escalation_risk_alert_precision", "closed alerts whose ticket escalated",
                                     **health)
        self.alert_lead_hours = Gauge("escalation_risk_alert_lead_hours_median",
                                      "median hours from alert to escalation", **health)
        self.retrain = Gauge("escalation_risk_retrain_recommended", "1 when drift or calibration crossed a threshold",
                             **health)
        self.case_mix_flagged = Gauge("escalation_risk_case_mix_flagged",
                                      "rows flagged above their case mix", ["dimension"], **health)
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

    def set_health(self, view: dict) -> None:
        """The live view's figures (NaN where not judged: Prometheus has no null)."""
        def value(x: object) -> float:
            return float("nan") if x is None else float(x)

        health = view.get("health") or {}
        drift = health.get("drift") or {}
        self.score_psi.set(value((drift.get("score") or {}).get("psi")))
        for row in drift.get("features", []):
            self.feature_psi.labels(feature=row["feature"]).set(value(row["psi"]))
        judged = [w for w in health.get("windows", []) if w.get("judged")]
        self.calibration_ece.set(value(judged[0]["ece"]) if judged else float("nan"))
        self.roc_auc.set(value(judged[0]["roc_auc"]) if judged else float("nan"))
        for row in health.get("bands", []):
            self.band_rate.labels(band=row["band"]).set(value(row["realised_rate"]))
        alerts = health.get("alerts") or {}
        self.alert_precision.set(value(alerts.get("precision")))
        self.alert_lead_hours.set(value(alerts.get("lead_hours_median")))
        self.retrain.set(1.0 if (health.get("retrain") or {}).get("recommended") else 0.0)
        for name, table in ((view.get("case_mix") or {}).get("tables") or {}).items():
            self.case_mix_flagged.labels(dimension=name).set(float(table["flagged_above"]))

    def exposition(self) -> bytes:
        """The text format: summed over all workers in multi-process mode, else this app's registry."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)
