"""The ticket store's endpoints and the recording that /v1/score and the integrations share.

POST /v1/events takes full or partial canonical events (one, or {"events": [...]}), merges them
into the store (committed before the answer) and answers with each ticket's score;
GET /v1/tickets/{id} shows a ticket's state, latest score (with its feature values) and timeline;
GET /v1/queue lists open tickets by current risk. With ESCALATION_RISK_STATE=off the service
keeps nothing and these answer 404.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import cache

from flask import Blueprint, Flask, current_app, g, request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError

from features.settings import Settings
from serving.errors import ApiError, json_response
from serving.recording import record_and_score, require_store, store_error
from serving.routes import check_api_key as check_key
from serving.routes import current_model, read_json
from serving.schemas import TicketEvent
from serving.store.db import create_store_engine, upgrade_database
from serving.store.tickets import TicketStore

log = logging.getLogger("escalation_risk.serving")
tickets_api = Blueprint("tickets", __name__)
SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
BANDS = ("low", "medium", "high")
RETENTION_INTERVAL_SECONDS = 3600.0


def open_store(app: Flask) -> None:
    """Open the store (migrated to the newest schema first) unless the service is stateless, and let
    the model holder put the store's history on every model it loads (call before loading one)."""
    settings: Settings = app.extensions["settings"]
    if settings.state != "on" or "ticket_store" in app.extensions:
        return
    url = settings.resolved_store_url
    upgrade_database(url)
    store = TicketStore(create_store_engine(url, settings.store_busy_timeout_seconds))
    app.extensions["ticket_store"] = store
    app.extensions["model"].history_source = store.read_history_since
    start_retention(app, store, settings)


def init_app(app: Flask) -> None:
    app.register_blueprint(tickets_api)


def start_retention(app: Flask, store: TicketStore, settings: Settings) -> None:
    """Drop ticket text older than the retention period now and every hour (a background thread)."""

    def run(stop: threading.Event) -> None:
        while True:
            try:
                store.purge_expired_text(settings.text_retention_days)
            except Exception as exc:  # a busy store: try again next time
                log.warning("ticket text retention pass failed: %s", type(exc).__name__)
            if stop.wait(RETENTION_INTERVAL_SECONDS):
                return

    app.extensions["background"].start("text-retention", run)


@tickets_api.before_request
def check_api_key() -> None:
    """The same key check as the scoring endpoints (serving.routes.check_api_key)."""
    check_key()


@cache
def event_list_adapter() -> TypeAdapter:
    return TypeAdapter(list[TicketEvent])


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict]:
    return [{"field": prefix + ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]


def parse_events(body: object) -> tuple[list[dict], bool]:
    """One event or {"events": [...]} up to the batch maximum, as dicts of the fields sent."""
    if not isinstance(body, dict):
        raise ApiError.for_body(422, "invalid_request", "expected a JSON object: an event or {\"events\": [...]}")
    if "events" not in body:
        try:
            return [TicketEvent.model_validate(body).model_dump(exclude_unset=True)], False
        except ValidationError as exc:
            raise ApiError(422, "invalid_event", "the event has invalid fields", field_errors(exc)) from exc
    raw = body["events"]
    settings = current_app.extensions["settings"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_request", "`events` must be a non-empty list",
                       [{"field": "events", "message": "expected a non-empty list"}])
    if len(raw) > settings.max_batch:
        raise ApiError(422, "batch_too_large", f"at most {settings.max_batch} events per request",
                       [{"field": "events", "message": f"{len(raw)} events; the maximum is {settings.max_batch}"}])
    try:
        return [e.model_dump(exclude_unset=True) for e in event_list_adapter().validate_python(raw)], True
    except ValidationError as exc:
        raise ApiError(422, "invalid_event", "some events have invalid fields", field_errors(exc, "events.")) from exc


@tickets_api.post("/v1/events")
def post_events():
    """Merge full or partial ticket events into the store; answer with each ticket's score."""
    require_store()
    source = request.args.get("source", "api")
    if not SOURCE_NAME.match(source):
        raise ApiError(422, "invalid_request", "bad source name",
                       [{"field": "source", "message": "letters, digits, '.', '_' and '-' (at most 64)"}])
    events, batch = parse_events(read_json())
    live = current_model()
    g.n_tickets = len(events)
    recorded, scores = record_and_score(live, events, source, "events." if batch else "")
    if not batch:
        item = recorded[0]
        return json_response({**scores[item.ticket_id], "event": {"id": item.event_id, "duplicate": item.duplicate}})
    return json_response({
        "scores": [scores[t] for t in dict.fromkeys(item.ticket_id for item in recorded)],
        "events": [{"index": item.index, "ticket_id": item.ticket_id, "id": item.event_id,
                    "duplicate": item.duplicate} for item in recorded],
    })


@tickets_api.get("/v1/tickets/<path:ticket_id>")
def get_ticket(ticket_id: str):
    """The ticket's latest state, latest score with its reasons and feature values, and its timeline."""
    store = require_store()
    try:
        ticket = store.get_ticket(ticket_id)
    except DBAPIError as exc:
        raise store_error(exc) from exc
    if ticket is None:
        raise ApiError(404, "not_found", "no such ticket in the store",
                       [{"field": "ticket_id", "message": "unknown ticket id"}])
    alerts = current_app.extensions.get("alert_store")
    if alerts is not None:  # each alert with its timeline (raised, delivered, acknowledged, outcome)
        try:
            ticket["alerts"] = alerts.alerts_for_ticket(ticket_id)
        except DBAPIError as exc:
            raise store_error(exc) from exc
    return json_response(ticket)


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(422, "invalid_request", f"bad query parameter {name}",
                       [{"field": name, "message": f"expected a whole number from {low} to {high}"}])
    return value


@tickets_api.get("/v1/queue")
def get_queue():
    """Open tickets ordered by current risk; ?band=&group=&agent=&category=&limit=&offset=."""
    store = require_store()
    band = request.args.get("band")
    if band is not None and band not in BANDS:
        raise ApiError(422, "invalid_request", "bad query parameter band",
                       [{"field": "band", "message": f"expected one of {', '.join(BANDS)}"}])
    limit = query_int("limit", 50, 1, 500)
    offset = query_int("offset", 0, 0, 10_000_000)
    try:
        page = store.list_queue(limit=limit, offset=offset, band=band, group=request.args.get("group"),
                                agent_id=request.args.get("agent"), category=request.args.get("category"))
    except DBAPIError as exc:
        raise store_error(exc) from exc
    return json_response(page)
