"""The ops lead's live view of a window of the ticket store: against case mix, model health, drift.

One computation (`OpsMonitor.compute`), stored as the latest health report in the store so every
service process shows the same numbers (the dashboard, GET /v1/health, the Prometheus gauges):

1. The window's tickets (created in the last `days`) are rebuilt as a canonical event log from the
   store (serving/store/event_log.py) and labelled with training's own snapshot code
   (features.snapshots.build_snapshots, the bundle's label rule and horizon; a snapshot whose
   outcome is not known yet is left out, as in training).
2. Each needed update gets its features as of its own time through the live path (the bundle's
   features with the store's history overlay, features.online), at most `monitoring_max_rows`
   updates (an even sample beyond that; every ticket's creation is always included).
3. Against case mix: the creation snapshot of each ticket whose outcome is known, its expected risk
   from the bundle's case-mix model (bundle/case_mix.py), tables per agent, team, category, customer.
   Repeat issues over the window's tickets.
4. Model health: the current model's score of each labelled update -> realised rate per band, ROC-AUC
   and ECE per rolling window; drift (PSI) of every feature and of the score over the newest window
   against the training distribution the bundle carries; alert precision and lead time; verdicts
   (acknowledgements and POST /v1/feedback) against outcomes; "retrain recommended" by the bundle's
   `monitoring` thresholds.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from bundle import health
from bundle.case_mix import EXPECTED, OBSERVED, CaseMixModel, load_case_mix_model, summarize_case_mix
from bundle.repeats import summarize_repeat_issues
from features.schema import validate_events
from features.settings import Settings
from features.snapshots import LABEL, POSITION, SNAPSHOT_TIME, build_snapshots
from serving.store.alert_tables import AlertRow
from serving.store.event_log import EVENT_ID, find_ticket_ids, replay_states, to_event_frame
from serving.store.monitoring_tables import FeedbackRow, HealthReportRow
from serving.store.tables import TicketRow

log = logging.getLogger("escalation_risk.monitoring")
MONITORING_LEASE = "monitoring"
MAX_REPORTS_KEPT = 50


class MonitoringError(RuntimeError):
    """The live view cannot be computed (no model loaded, no store)."""


@dataclass
class BundleExtras:
    """What monitoring reads from the bundle besides the models: the case-mix model and the reference."""

    version: str
    case_mix: CaseMixModel | None
    reference: dict | None


def load_extras(bundle) -> BundleExtras:
    """The loaded bundle's case-mix model and reference distribution (None where it has none)."""
    path = bundle.path / health.REFERENCE
    reference = json.loads(path.read_text()) if path.is_file() else None
    return BundleExtras(bundle.version, load_case_mix_model(bundle.path, bundle.metadata), reference)


def snapshot_params(metadata: dict) -> dict:
    """build_snapshots' arguments from the bundle's params (training's defaults where absent)."""
    params = metadata.get("params") or {}
    return {
        "max_per_ticket": int(params.get("snapshots.max_per_ticket") or 12),
        "closed_statuses": list(params.get("snapshots.closed_statuses") or ["closed"]),
        "horizon_hours": params.get("label.horizon_hours", 336),
        "rule": params.get("label.rule") or "level_rise",
        "counter": params.get("label.counter") or "reassignment_count",
        "min_rise": int(params.get("label.min_rise") or 1),
    }


def label_updates(events: pd.DataFrame, metadata: dict, now: datetime) -> pd.DataFrame:
    """Training's snapshots of the store's updates whose outcome is known at `now`."""
    if events.empty:
        return events.assign(**{LABEL: pd.Series(dtype="int8"), POSITION: pd.Series(dtype="int64")})
    return build_snapshots(events, data_end=pd.Timestamp(now), **snapshot_params(metadata))


def scored_updates(events: pd.DataFrame, metadata: dict) -> pd.DataFrame:
    """The updates the model scores (training's snapshot population: before the first escalation, not
    closed, at most max_per_ticket per ticket), whatever their outcome; labels are not used."""
    if events.empty:
        return events
    settings = snapshot_params(metadata)
    # Every row's "outcome" counts as known when the horizon has passed before data_end.
    settings["horizon_hours"] = settings["horizon_hours"] or 1.0
    return build_snapshots(events, data_end=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=36_500), **settings)


def features_as_of(live, states: list[dict]) -> np.ndarray:
    """The model's features of each state as of its own event time (live history overlay included)."""
    if not states:
        return np.empty((0, len(live.online.names)))
    live.sync_history()
    return live.online.transform_many(states)[0]


def name_features(live, matrix: np.ndarray) -> pd.DataFrame:
    """A feature matrix with category codes turned back into the levels' names (for drift)."""
    frame = pd.DataFrame(matrix, columns=live.online.names)
    for j, names in live.online.category_names.items():
        codes = matrix[:, j]
        labels = np.array([*names, None], dtype=object)
        frame[live.online.names[j]] = labels[np.where(np.isnan(codes), len(names), codes).astype(int)]
    return frame


def even_sample(n: int, limit: int) -> np.ndarray:
    """Up to `limit` evenly spaced positions of n."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def read_alerts(engine: Engine, start: datetime) -> pd.DataFrame:
    with Session(engine) as session:
        rows = session.execute(select(AlertRow.id, AlertRow.ticket_id, AlertRow.raised_at, AlertRow.outcome,
                                      AlertRow.verdict, AlertRow.closed_at).where(AlertRow.raised_at >= start)).all()
    return pd.DataFrame(rows, columns=["alert_id", "ticket_id", "raised_at", "outcome", "verdict", "closed_at"])


def read_feedback(engine: Engine, start: datetime) -> pd.DataFrame:
    with Session(engine) as session:
        rows = session.execute(select(FeedbackRow.ticket_id, FeedbackRow.verdict, FeedbackRow.received_at)
                               .where(FeedbackRow.received_at >= start)).all()
    return pd.DataFrame(rows, columns=["ticket_id", "verdict", "received_at"])


def ticket_outcomes(engine: Engine, ticket_ids: list[str]) -> dict[str, str | None]:
    """escalated / not_escalated (ended without) / None (still open) per ticket, from the store's facts."""
    out: dict[str, str | None] = {}
    with Session(engine) as session:
        for start in range(0, len(ticket_ids), 500):
            for ticket_id, facts, is_open in session.execute(
                    select(TicketRow.ticket_id, TicketRow.history, TicketRow.is_open)
                    .where(TicketRow.ticket_id.in_(ticket_ids[start:start + 500]))):
                escalated = int(facts.get("max_level") or 0) > int(facts.get("first_level") or 0)
                out[ticket_id] = "escalated" if escalated else (None if is_open else "not_escalated")
    return out


def first_escalations(events: pd.DataFrame) -> pd.Series:
    """Per ticket, the time its escalation level first rose above its level at creation."""
    if events.empty:
        return pd.Series(dtype="datetime64[ns, UTC]")
    level = events["escalation_level"].to_numpy()
    first = events.groupby("ticket_id", sort=False)["escalation_level"].transform("first").to_numpy()
    return events.loc[level > first].groupby("ticket_id", sort=False)["event_time"].min()


class OpsMonitor:
    """Computes, stores and reads the live view; `holder` is the service's ModelHolder."""

    def __init__(self, engine: Engine, holder, settings: Settings, metrics=None):
        self.engine = engine
        self.holder = holder
        self.settings = settings
        self.metrics = metrics
        self.lock = threading.Lock()
        self._extras: BundleExtras | None = None

    def extras(self, bundle) -> BundleExtras:
        if self._extras is None or self._extras.version != bundle.version:
            self._extras = load_extras(bundle)
        return self._extras

    def compute(self, now: datetime | None = None, days: float | None = None, max_rows: int | None = None) -> dict:
        """The live view of the tickets created in the `days` before `now` (default: the bundle's
        monitoring.window_days x monitoring.windows); stored as the latest health report.
        `max_rows`: rows per case-mix table (default: the bundle's case_mix.max_rows)."""
        live = self.holder.live
        if live is None:
            raise MonitoringError("no model is loaded")
        now = (now or datetime.now(UTC)).astimezone(UTC)
        bundle = live.bundle
        metadata = bundle.metadata
        thresholds = health.read_thresholds(metadata)
        days = float(days or thresholds["window_days"] * thresholds["windows"])
        start = now - timedelta(days=days)
        extras = self.extras(bundle)
        params = metadata.get("params") or {}
        closed = snapshot_params(metadata)["closed_statuses"]

        ids = find_ticket_ids(self.engine, start, None, now)
        states = replay_states(self.engine, ids, closed, known_by=now)
        by_event = {state[EVENT_ID]: state for state in states}
        events = validate_events(to_event_frame(states)).events if states else to_event_frame([])
        labelled = label_updates(events, metadata, now)
        population = scored_updates(events, metadata)

        # Features once per update needed: every labelled creation (case mix), a sample of labelled
        # updates (health) and of the newest window's updates (drift).
        newest = population[population[SNAPSHOT_TIME] > pd.Timestamp(now - timedelta(days=thresholds["window_days"]))] \
            if len(population) else population
        limit = self.settings.monitoring_max_rows
        creations = labelled[labelled[POSITION] == 0] if len(labelled) else labelled
        health_rows = labelled.iloc[even_sample(len(labelled), limit)] if len(labelled) else labelled
        drift_rows = newest.iloc[even_sample(len(newest), limit)] if len(newest) else newest
        needed = list(dict.fromkeys([*creations.get(EVENT_ID, []), *health_rows.get(EVENT_ID, []),
                                     *drift_rows.get(EVENT_ID, [])]))
        matrix = features_as_of(live, [by_event[i] for i in needed])
        row_of = {event_id: k for k, event_id in enumerate(needed)}

        def rows(frame: pd.DataFrame) -> np.ndarray:
            return matrix[[row_of[i] for i in frame[EVENT_ID]]] if len(frame) else matrix[:0]

        view = {
            "computed_at": now.isoformat(timespec="seconds"),
            "window": {"from": start.isoformat(timespec="seconds"), "to": now.isoformat(timespec="seconds"),
                       "days": days},
            "model_version": bundle.version,
            "tickets": len(ids), "updates": int(len(events)), "labelled_updates": int(len(labelled)),
            "case_mix": self.case_mix_view(extras, creations, rows(creations), params, max_rows),
            "repeat_issues": self.repeat_view(events, start, params),
        }
        with live.predict_lock:
            scored = bundle.score_features(rows(health_rows), 1) if len(health_rows) else None
            drift_scores = bundle.score_features(rows(drift_rows), 1).probability if len(drift_rows) else None
        outcomes = pd.DataFrame({
            "scored_at": health_rows[SNAPSHOT_TIME].to_numpy() if len(health_rows) else [],
            "probability": scored.probability if scored is not None else [],
            "band": scored.band if scored is not None else [],
            "escalates": health_rows[LABEL].to_numpy() if len(health_rows) else [],
        })
        view["health"] = self.health_view(metadata, thresholds, extras, outcomes, now,
                                          name_features(live, rows(drift_rows)), drift_scores, events, start)
        self.save(view, start, now, bundle.version)
        self.publish(view)
        return view

    def case_mix_view(self, extras: BundleExtras, creations: pd.DataFrame, matrix: np.ndarray, params: dict,
                      max_rows: int | None = None) -> dict:
        if extras.case_mix is None:
            return {"available": False, "reason": "this model was trained without a case-mix model; retrain it"}
        tickets = pd.DataFrame({
            **{c: creations[c].astype("string").to_numpy() for c in ("agent_id", "group", "category", "customer_id")
               if c in creations},
            OBSERVED: creations[LABEL].to_numpy() if len(creations) else [],
            EXPECTED: extras.case_mix.predict(matrix) if len(creations) else [],
        })
        summary = summarize_case_mix(tickets, confidence=float(params.get("case_mix.confidence") or 0.95),
                                     reference=str(params.get("case_mix.reference") or "window"),
                                     max_rows=max_rows or int(params.get("case_mix.max_rows") or 15),
                                     min_tickets=int(params.get("case_mix.min_tickets") or 20))
        return {"available": True, **summary}

    @staticmethod
    def repeat_view(events: pd.DataFrame, start: datetime, params: dict) -> dict | None:
        if events.empty:
            return None
        first = events.groupby("ticket_id", sort=False).first().reset_index()
        tickets = first[["ticket_id", "customer_id", "category", "created_at"]].assign(
            escalated=first["ticket_id"].isin(first_escalations(events).index).astype(int).to_numpy())
        return summarize_repeat_issues(tickets, float(params.get("case_mix.repeat_within_days") or 7),
                                       window_from=pd.Timestamp(start),
                                       max_rows=int(params.get("case_mix.max_rows") or 15))

    def health_view(self, metadata: dict, thresholds: dict, extras: BundleExtras, outcomes: pd.DataFrame,
                    now: datetime, drift_features: pd.DataFrame, drift_scores: np.ndarray | None,
                    events: pd.DataFrame, start: datetime) -> dict:
        logged = metadata.get("metrics") or {}
        test_rates = {band: logged.get(f"test_band_{band}_escalation_rate") for band in health.BANDS}
        ece_bins = int((metadata.get("params") or {}).get("evaluation.ece_bins") or 15)
        windows = health.summarize_windows(outcomes, pd.Timestamp(now), thresholds["window_days"],
                                           thresholds["windows"], ece_bins, thresholds["min_outcomes"])
        if extras.reference is not None:
            drift = health.summarize_drift(extras.reference, drift_features, drift_scores, thresholds)
        else:
            drift = {"rows": int(len(drift_features)), "judged": False, "score": {"psi": None, "level": "not judged"},
                     "features": [], "reason": "this model was trained without a reference distribution; retrain it"}
        alerts = read_alerts(self.engine, start)
        escalated_at = first_escalations(events)
        escalated_at.index = escalated_at.index.astype(str)
        alerts["escalated_at"] = escalated_at.reindex(alerts["ticket_id"].astype(str)).to_numpy() \
            if len(alerts) else pd.Series(dtype="datetime64[ns, UTC]")
        feedback = read_feedback(self.engine, start)
        outcome_of = ticket_outcomes(self.engine, sorted(set(feedback["ticket_id"])))
        verdicts = pd.concat([
            pd.DataFrame({"verdict": alerts["verdict"], "outcome": alerts["outcome"].map(
                {"escalated": "escalated", "closed_without_escalation": "not_escalated"})}).dropna(subset=["verdict"]),
            pd.DataFrame({"verdict": "feedback: " + feedback["verdict"].astype(str),
                          "outcome": feedback["ticket_id"].map(outcome_of)}),
        ], ignore_index=True)
        return {
            "outcomes": int(len(outcomes)),
            "test_period": {"roc_auc": logged.get("test_roc_auc"), "ece": logged.get("test_ece")},
            "bands": health.summarize_bands(outcomes, test_rates),
            "windows": windows,
            "drift": drift,
            "alerts": health.summarize_alerts(alerts),
            "verdicts": health.summarize_verdicts(verdicts),
            "retrain": health.recommend_retrain(drift, windows, logged.get("test_roc_auc"), thresholds),
            "thresholds": thresholds,
        }

    # --- storing and reading ---------------------------------------------------------------
    def save(self, view: dict, start: datetime, now: datetime, version: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(insert(HealthReportRow).values(computed_at=now, window_from=start, window_to=now,
                                                           model_version=version, report=_jsonable(view)))
            old = session.execute(select(HealthReportRow.id).order_by(HealthReportRow.id.desc())
                                  .offset(MAX_REPORTS_KEPT)).scalars().all()
            if old:
                session.query(HealthReportRow).filter(HealthReportRow.id.in_(old)).delete(synchronize_session=False)

    def latest(self) -> dict | None:
        """The newest stored live view (any process may have computed it), or None."""
        with Session(self.engine) as session:
            row = session.execute(select(HealthReportRow.report).order_by(HealthReportRow.id.desc()).limit(1)
                                  ).scalar_one_or_none()
        return row

    def current(self, max_age_seconds: float | None = None) -> dict:
        """The newest live view of the loaded model, computed now when there is none that fresh."""
        max_age = self.settings.monitoring_interval_seconds * 2 if max_age_seconds is None else max_age_seconds
        view = self.latest()
        live = self.holder.live
        if view is not None and live is not None and view.get("model_version") == live.bundle.version:
            age = (datetime.now(UTC) - datetime.fromisoformat(view["computed_at"])).total_seconds()
            if max_age <= 0 or age <= max_age:
                self.publish(view)
                return view
        with self.lock:
            return self.compute()

    def publish(self, view: dict) -> None:
        """The view's figures as Prometheus gauges (serving.metrics)."""
        if self.metrics is not None:
            self.metrics.set_health(view)


def _jsonable(value: object) -> object:
    """JSON-ready copy: numpy scalars to Python, NaN to None, timestamps to ISO text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None if pd.isna(value) else str(value)
