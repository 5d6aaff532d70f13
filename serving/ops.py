"""Feedback and the live view's JSON: POST /v1/feedback, GET /v1/health (serving/monitoring.py).

Feedback (a verdict on a ticket's score, optionally the true outcome) is committed before the
201 answer and kept with the score it judges; `escalation-risk store export` folds the outcomes
received before its cut-off into the next training data. The live view is recomputed in the
background every `monitoring_interval_seconds` by whichever process holds the "monitoring" lease
in the store, and on demand when none is fresh.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app, request
from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from serving.alerts import AlertStore
from serving.auth import key_matches, presented_key
from serving.errors import ApiError, json_response
from serving.monitoring import MONITORING_LEASE, MonitoringError, OpsMonitor
from serving.schemas import Feedback
from serving.store.db import write_engine
from serving.store.monitoring_tables import FeedbackRow
from serving.store.tables import TicketRow
from serving.store.tickets import iso, utc

log = logging.getLogger("escalation_risk.monitoring")
ops = Blueprint("ops", __name__)


def init_app(app: Flask) -> None:
    """The monitor (when the service keeps state) and its background refresh; the routes."""
    store = app.extensions.get("ticket_store")
    if store is not None and "monitor" not in app.extensions:
        monitor = app.extensions["monitor"] = OpsMonitor(store.engine, app.extensions["model"],
                                                         app.extensions["settings"], app.extensions["metrics"])
        start_refresh(app, monitor)
    app.register_blueprint(ops)


def start_refresh(app: Flask, monitor: OpsMonitor) -> None:
    """Recompute the live view every interval in the process holding the monitoring lease (a background thread)."""
    interval = monitor.settings.monitoring_interval_seconds
    if interval <= 0:
        return
    leases = AlertStore(monitor.engine)
    holder = f"monitor-{id(monitor)}-{threading.get_native_id()}"

    def run(stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                if monitor.holder.live is not None and leases.acquire_lease(holder, interval, datetime.now(UTC),
                                                                            name=MONITORING_LEASE):
                    with monitor.lock:
                        monitor.compute()
            except Exception as exc:  # a busy store or a model swap mid-way: next time
                log.warning("live view refresh failed: %s", type(exc).__name__)

    app.extensions["background"].start("monitoring-refresh", run)


def require_monitor() -> OpsMonitor:
    monitor = current_app.extensions.get("monitor")
    if monitor is None:
        raise ApiError(404, "state_off", "the service keeps no ticket state (ESCALATION_RISK_STATE=off)")
    return monitor


@ops.before_request
def check_api_key() -> None:
    settings = current_app.extensions["settings"]
    if settings.api_keys and not key_matches(presented_key(request), settings.api_keys):
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer … or X-API-Key)")


def feedback_dict(row: FeedbackRow) -> dict:
    return {"feedback_id": row.id, "ticket_id": row.ticket_id, "verdict": row.verdict, "outcome": row.outcome,
            "escalation_type": row.escalation_type,
            "escalated_at": iso(row.escalated_at), "who": row.who,
            "note": row.note, "model_version": row.model_version, "probability": row.probability,
            "received_at": iso(row.received_at)}


@ops.post("/v1/feedback")
def post_feedback():
    """Store a verdict on a ticket's score (agree / disagree), optionally the true outcome and type."""
    from serving.routes import read_json

    monitor = require_monitor()
    body = read_json()
    if not isinstance(body, dict):
        raise ApiError.for_body(422, "invalid_request", "expected a JSON object with ticket_id and verdict")
    try:
        feedback = Feedback.model_validate(body)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
                   for err in exc.errors()]
        raise ApiError(422, "invalid_feedback", "the feedback has invalid fields", details) from exc
    now = datetime.now(UTC)
    try:
        with Session(write_engine(monitor.engine), expire_on_commit=False) as session, session.begin():
            ticket = session.execute(select(TicketRow.probability, TicketRow.model_version, TicketRow.created_at)
                                     .where(TicketRow.ticket_id == feedback.ticket_id)).one_or_none()
            if ticket is None:
                raise ApiError(404, "not_found", "no such ticket in the store",
                               [{"field": "ticket_id", "message": "unknown ticket id"}])
            if feedback.escalated_at is not None and ticket.created_at is not None \
                    and utc(feedback.escalated_at) < utc(ticket.created_at):
                message = (f"escalated_at {iso(feedback.escalated_at)} is before the ticket's created_at "
                           f"{iso(ticket.created_at)}")
                raise ApiError(422, "invalid_feedback", "the feedback has invalid fields",
                               [{"field": "escalated_at", "message": message}])
            feedback_id = session.execute(insert(FeedbackRow).values(
                ticket_id=feedback.ticket_id, verdict=feedback.verdict, outcome=feedback.outcome,
                escalation_type=feedback.escalation_type, escalated_at=feedback.escalated_at, who=feedback.who,
                note=feedback.note, model_version=ticket.model_version, probability=ticket.probability,
                received_at=now).returning(FeedbackRow.id)).scalar_one()
            row = session.get(FeedbackRow, feedback_id)
            stored = feedback_dict(row)
    except DBAPIError as exc:
        from serving.ticket_routes import store_error

        raise store_error(exc) from exc
    return json_response(stored, 201)


@ops.get("/v1/health")
def get_health():
    """The live view: against case mix, repeat issues, model health and drift (recomputed when stale,
    or now with ?refresh=1)."""
    monitor = require_monitor()
    refresh = request.args.get("refresh", "0")
    if refresh not in ("0", "1"):
        raise ApiError(422, "invalid_request", "bad query parameter refresh",
                       [{"field": "refresh", "message": "0 or 1"}])
    try:
        if refresh == "1":
            with monitor.lock:
                return json_response(monitor.compute())
        return json_response(monitor.current())
    except MonitoringError as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from exc
