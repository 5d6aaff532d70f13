"""The alert endpoints: GET /v1/alerts, GET /v1/alerts/{id}, POST /v1/alerts/{id}/ack.

The alert store shares the ticket store's database; with ESCALATION_RISK_STATE=off there is no
store and these answer 404. The destinations file is validated at start-up (a bad file stops the
service, naming the file, line and field), although only the watcher delivers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app, request
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from serving.alerts import STATUSES, AlertConflict, AlertNotFound, AlertStore
from serving.auth import key_matches, presented_key
from serving.destinations import load_destinations
from serving.errors import ApiError, json_response
from serving.schemas import AlertAck

alerts_api = Blueprint("alerts", __name__)


def open_alerts(app: Flask) -> None:
    """Validate the destinations file and open the alert store on the ticket store's engine."""
    settings = app.extensions["settings"]
    destinations = app.extensions["destinations"] = load_destinations(settings.resolved_destinations_path, settings)
    store = app.extensions.get("ticket_store")
    if store is not None:
        app.extensions["alert_store"] = AlertStore(store.engine, [d.name for d in destinations.destinations])


def init_app(app: Flask) -> None:
    open_alerts(app)
    app.register_blueprint(alerts_api)


@alerts_api.before_request
def check_api_key() -> None:
    """Alerts need a key when keys are configured (as scoring does)."""
    settings = current_app.extensions["settings"]
    if settings.api_keys and not key_matches(presented_key(request), settings.api_keys):
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer … or X-API-Key)")


def require_alerts() -> AlertStore:
    alerts = current_app.extensions.get("alert_store")
    if alerts is None:
        raise ApiError(404, "state_off", "the service keeps no ticket state, so no alerts (ESCALATION_RISK_STATE=off)")
    return alerts


def unavailable(exc: DBAPIError) -> ApiError:
    from serving.store.db import unavailable_reason

    reason = unavailable_reason(exc)
    if reason is None:
        raise exc
    return ApiError(503, "store_unavailable", str(reason), headers={"Retry-After": str(reason.retry_after)})


def query_number(name: str, kind: type, low: float, high: float) -> float | int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(422, "invalid_request", f"bad query parameter {name}",
                       [{"field": name, "message": f"expected a {'whole ' if kind is int else ''}number "
                                                   f"from {low:g} to {high:g}"}])
    return value


def parse_alert_id(alert_id: str) -> int:
    if not alert_id.isdigit() or len(alert_id) > 18:
        raise ApiError(404, "not_found", "no such alert", [{"field": "alert_id", "message": "unknown alert id"}])
    return int(alert_id)


@alerts_api.get("/v1/alerts")
def list_alerts():
    """Alerts, newest first; ?status=open|acknowledged|closed&team=&route_to=&ticket_id=&min_age_hours=
    &max_age_hours=&limit=&offset= (age = hours since the alert was raised)."""
    alerts = require_alerts()
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_request", "bad query parameter status",
                       [{"field": "status", "message": f"expected one of {', '.join(STATUSES)}"}])
    filters = {"min_age_hours": query_number("min_age_hours", float, 0, 1e6),
               "max_age_hours": query_number("max_age_hours", float, 0, 1e6)}
    limit = query_number("limit", int, 1, 500) or 50
    offset = query_number("offset", int, 0, 10_000_000) or 0
    try:
        page = alerts.list_alerts(datetime.now(UTC), status=status, team=request.args.get("team"),
                                  route_to=request.args.get("route_to"), ticket_id=request.args.get("ticket_id"),
                                  limit=limit, offset=offset, **filters)
    except DBAPIError as exc:
        raise unavailable(exc) from exc
    return json_response(page)


@alerts_api.get("/v1/alerts/<alert_id>")
def get_alert(alert_id: str):
    """One alert with its timeline (raised, delivered, acknowledged, outcome) and deliveries."""
    try:
        alert = require_alerts().get_alert(parse_alert_id(alert_id))
    except DBAPIError as exc:
        raise unavailable(exc) from exc
    if alert is None:
        raise ApiError(404, "not_found", "no such alert", [{"field": "alert_id", "message": "unknown alert id"}])
    return json_response(alert)


@alerts_api.post("/v1/alerts/<alert_id>/ack")
def acknowledge_alert(alert_id: str):
    """Acknowledge: {"by": ..., "verdict": acting|agree|disagree|already_handled, "note": ...}.
    Committed before the 200; 404 unknown alert, 409 already acknowledged, 422 bad fields."""
    from serving.routes import read_json

    alerts = require_alerts()
    number = parse_alert_id(alert_id)
    body = read_json()
    if not isinstance(body, dict):
        raise ApiError.for_body(422, "invalid_ack", 'the body must be a JSON object: {"by": ..., "verdict": ...}')
    try:
        ack = AlertAck.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_ack", "the acknowledgement has invalid fields",
                       [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                        for e in exc.errors()]) from exc
    try:
        return json_response(alerts.acknowledge(number, ack.by, ack.verdict, ack.note, datetime.now(UTC)))
    except AlertNotFound as exc:
        raise ApiError(404, "not_found", "no such alert",
                       [{"field": "alert_id", "message": "unknown alert id"}]) from exc
    except AlertConflict as exc:
        raise ApiError(409, "already_acknowledged", str(exc)) from exc
    except DBAPIError as exc:
        raise unavailable(exc) from exc
