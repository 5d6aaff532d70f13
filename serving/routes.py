"""The service's endpoints: scoring, integrations, model info, health, metrics, admin, OpenAPI."""

from __future__ import annotations

import hmac
import json
import re
from functools import cache

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError

from bundle.model import ModelBundle
from serving.adapters import (
    SYSTEMS,
    PayloadError,
    ReplayGuard,
    adapt_payload,
    event_to_ticket,
    verify_zendesk_signature,
)
from serving.auth import key_matches, presented_key
from serving.errors import ApiError, json_response
from serving.live_model import LiveModel
from serving.openapi import build_openapi, render_docs
from serving.recording import count_scores, current_store, record_and_score
from serving.schemas import Ticket, TicketEvent
from serving.scoring import score_states

api = Blueprint("api", __name__)

OPEN_ENDPOINTS = {"api.get_health", "api.get_readiness", "api.get_metrics", "api.get_openapi", "api.get_docs"}


def init_app(app: Flask) -> None:
    app.register_blueprint(api)


@api.before_request
def check_api_key() -> None:
    """Scoring and model info need a key when keys are configured; health and metrics stay open."""
    settings = current_app.extensions["settings"]
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint == "api.reload_model" or not settings.api_keys:
        return
    if not key_matches(presented_key(request), settings.api_keys):
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer … or X-API-Key)")


# 19 digits in a row may be an integer beyond 64 bits, which orjson reads as a float (losing digits).
_LONG_DIGITS = re.compile(rb"\d{19}")


def read_json() -> object:
    """Parse the body with orjson; 415 for another content type, 400 for malformed JSON.

    A body with an integer literal of 19+ digits is parsed by the standard library instead,
    which keeps every digit: ids stay exact strings and out-of-range counters are 422s naming
    the field, not floats.
    """
    if not request.mimetype or request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    data = request.get_data(cache=True)
    if request.content_length is None and len(data) >= current_app.config["MAX_CONTENT_LENGTH"]:
        request.stream.read(1)  # a chunked body cut at the limit: reading on raises 413, not a 400 later
    try:
        return loads_keeping_long_integers(data) if _LONG_DIGITS.search(data) else orjson.loads(data)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise ApiError.for_body(400, "bad_request", f"body is not valid JSON: {str(exc)[:200]}") from exc


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def loads_keeping_long_integers(data: bytes) -> object:
    """The standard library's parser (exact integers of any length), as strict as orjson: UTF-8
    only, no NaN/Infinity, no unpaired surrogates. Raises ValueError or RecursionError."""
    parsed = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    stack = [parsed]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError on a lone surrogate ("\ud800")
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return parsed


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict]:
    return [
        {"field": prefix + ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
    ]


@cache
def ticket_list_adapter() -> TypeAdapter:
    """A batch is validated in one call (built on first use, not at import)."""
    return TypeAdapter(list[Ticket])


def parse_tickets(body: object, strict: bool = True) -> tuple[list[Ticket], bool, list[dict], list[int]]:
    """One ticket, or {"tickets": [...]} up to the configured maximum; every bad field is named.

    Returns (valid tickets, whether a batch was sent, errors, the valid tickets' positions in the
    request). A single bad ticket, or any bad
    ticket of a batch with `strict`, raises a 422 ApiError; otherwise a batch's bad tickets come
    back as errors [{index, ticket_id, field, message}] and the rest are scored.
    """
    if not isinstance(body, dict):
        raise ApiError.for_body(422, "invalid_request", "expected a JSON object: a ticket or {\"tickets\": [...]}")
    settings = current_app.extensions["settings"]
    if "tickets" not in body:
        try:
            return [Ticket.model_validate(body)], False, [], [0]
        except ValidationError as exc:
            raise ApiError(422, "invalid_ticket", "the ticket has invalid fields", field_errors(exc)) from exc
    raw = body["tickets"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_request", "`tickets` must be a non-empty list",
                       [{"field": "tickets", "message": "expected a non-empty list"}])
    if len(raw) > settings.max_batch:
        raise ApiError(422, "batch_too_large", f"at most {settings.max_batch} tickets per request",
                       [{"field": "tickets", "message": f"{len(raw)} tickets; the maximum is {settings.max_batch}"}])
    try:
        return ticket_list_adapter().validate_python(raw), True, [], list(range(len(raw)))
    except ValidationError as exc:
        if strict:
            raise ApiError(422, "invalid_ticket", "some tickets have invalid fields (strict: none was scored)",
                           field_errors(exc, "tickets.")) from exc
        failures = exc.errors()
    bad = {err["loc"][0] for err in failures}
    errors = [{"index": err["loc"][0], "ticket_id": batch_ticket_id(raw[err["loc"][0]]),
               "field": ".".join(str(p) for p in err["loc"][1:]) or "(ticket)", "message": err["msg"]}
              for err in failures]
    if len(bad) == len(raw):
        raise ApiError(422, "invalid_ticket", "no ticket of the batch is valid; nothing was scored",
                       [{"field": f"tickets.{e['index']}.{e['field']}", "message": e["message"]} for e in errors])
    positions = [i for i in range(len(raw)) if i not in bad]
    return [Ticket.model_validate(raw[i]) for i in positions], True, errors, positions


def batch_ticket_id(ticket: object) -> str | None:
    """The ticket_id a client sent with a bad ticket, as text (for matching errors to tickets)."""
    value = ticket.get("ticket_id") if isinstance(ticket, dict) else None
    return None if value is None or isinstance(value, dict | list) else str(value)[:200]


def query_flag(name: str) -> bool:
    """A boolean query parameter (?strict=true); anything but true/false/1/0/yes/no is a 422."""
    value = request.args.get(name)
    if value is None or value.lower() in ("false", "0", "no", ""):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise ApiError(422, "invalid_request", f"query parameter {name} must be true or false",
                   [{"field": name, "message": f"expected true or false, got {value[:20]!r}"}])


def current_model() -> LiveModel:
    live = current_app.extensions["model"].live
    if live is None:
        raise ApiError(503, "model_unavailable", "no verified model is loaded; see /readyz")
    return live


def current_bundle() -> ModelBundle:
    return current_model().bundle


def score_tickets(tickets: list[Ticket]) -> list[dict]:
    """Score validated tickets as sent through the one scoring path (serving.scoring.score_states); with
    the ticket store on, each is also recorded as an event of its ticket, and the live history counts
    what the store has seen."""
    live = current_model()
    rows = [t.__dict__ for t in tickets]  # the validated fields, read only (extra keys are ignored, not kept)
    if current_store() is not None:
        _, scores = record_and_score(live, [dict(row) for row in rows], "score", "tickets.", as_sent=True)
        return [scores[i] for i in range(len(rows))]
    out = score_states(live, current_app.extensions["policy"], rows, current_app.extensions["settings"])
    count_scores(out)
    return out


@api.post("/v1/score")
def score() -> Response:
    """Score one canonical ticket, or a batch: {"results", "errors"} (200 when one scored,
    422 when none did; ?strict=true refuses the whole batch for one bad ticket). A batch that
    scored in full also carries its results as `scores`, the field of the batch response before
    partial batches (old clients read it; it is absent when a ticket failed, so they fail loudly
    rather than pair scores with the wrong tickets)."""
    tickets, batch, errors, positions = parse_tickets(read_json(), strict=query_flag("strict"))
    g.n_tickets = len(tickets)
    try:
        results = score_tickets(tickets)
    except ApiError as exc:  # the store's "tickets.<i>" counts the valid tickets: name the request's
        def named(field: str) -> str:  # a single ticket's fields are the body's own
            return re.sub(r"^tickets\.(\d+)\.", lambda m: f"tickets.{positions[int(m.group(1))]}." if batch else "",
                          field)

        exc.details = [{**d, "field": named(d["field"])} for d in exc.details]
        raise
    if not batch:
        return json_response(results[0])
    body = {"results": results, "errors": errors}
    if not errors:
        body["scores"] = results
    return json_response(body)


@api.post("/v1/integrations/<system>")
def score_integration(system: str) -> Response:
    """Score a ticket in Zendesk's, ServiceNow's or Freshdesk's own payload shapes (serving.adapters)."""
    if system not in SYSTEMS:
        raise ApiError(404, "not_found", f"no integration {system!r}; available: {', '.join(SYSTEMS)}")
    body = read_json()
    settings = current_app.extensions["settings"]
    claimed = None
    if system == "zendesk" and settings.zendesk_webhook_secret:
        problem = verify_zendesk_signature(
            settings.zendesk_webhook_secret, request.get_data(cache=True),
            request.headers.get("X-Zendesk-Webhook-Signature"),
            request.headers.get("X-Zendesk-Webhook-Signature-Timestamp"),
            settings.zendesk_replay_window_seconds,
        )
        if not problem:
            claimed = request.headers["X-Zendesk-Webhook-Signature"]
            if not replay_guard().first_use(claimed):
                claimed, problem = None, "this signature was already used (replayed request)"
        if problem:
            raise ApiError(401, "invalid_signature", f"Zendesk webhook signature rejected: {problem}")
    try:
        return json_response(score_integration_payload(system, body))
    except Exception:
        # Zendesk retries a delivery that failed (a 503 while no model is loaded, say) with the
        # same signature: only a request that was answered 200 uses its signature up.
        if claimed is not None:
            replay_guard().release(claimed)
        raise


VENDOR_NAMES = {"zendesk": "Zendesk", "servicenow": "ServiceNow", "freshdesk": "Freshdesk"}


def score_integration_payload(system: str, body: object) -> dict:
    """The payload's events, scored: one event -> one Score (with the adapter's warnings), several
    (a ServiceNow `result` list) -> {"results", "errors"}. With the ticket store on, the events
    (full or partial) are recorded first and each ticket's merged state is scored; without it, an
    event that carries only what changed and no creation time cannot be scored: a 422 naming the
    vendor field the creation time would come from. Errors name the vendor's fields."""
    vendor = VENDOR_NAMES[system]
    try:
        adapted = adapt_payload(system, body, request.headers, current_app.extensions["settings"],
                                mapping=current_app.extensions["integration_mapping"])
    except PayloadError as exc:
        raise ApiError(422, "invalid_payload", f"cannot map the {vendor} payload",
                       [{"field": f, "message": m} for f, m in exc.problems]) from exc
    stateful = current_store() is not None
    valid, kept, errors = [], [], list(adapted.errors)
    for position, (event, sources) in enumerate(zip(adapted.events, adapted.sources, strict=True)):
        index = adapted.positions[position]
        if not stateful and event.get("created_at") is None:
            name = sources.get("created_at", "created_at")
            errors.append({"index": index, "ticket_id": event.get("ticket_id"), "field": name,
                           "message": f"this {vendor} event carries only what changed and no {name}: it cannot be "
                                      "scored without the ticket's stored state (send the creation time, or "
                                      "turn the ticket store on: ESCALATION_RISK_STATE=on)"})
            continue
        try:
            if stateful:
                valid.append(TicketEvent.model_validate(event).model_dump(exclude_unset=True))
            else:
                valid.append(Ticket.model_validate(event_to_ticket(event)))
            kept.append(position)
        except ValidationError as exc:
            errors += [{"index": index, "ticket_id": event.get("ticket_id"),
                        "field": vendor_field(sources, err["loc"]), "message": err["msg"]} for err in exc.errors()]
    if not valid:
        partial = any("only what changed" in e["message"] for e in errors)
        raise ApiError(422, "partial_event" if partial else "invalid_payload",
                       f"the {vendor} payload cannot be scored" + (" on its own" if partial else ""),
                       [{"field": e["field"], "message": e["message"]} for e in errors])
    g.n_tickets = len(valid)
    if stateful:
        try:
            recorded, scores = record_and_score(current_model(), valid, system, STORE_PREFIX)
        except ApiError as exc:  # the store names canonical fields: name the vendor's
            exc.details = [{**d, "field": store_field(adapted, kept, d["field"])} for d in exc.details]
            raise
        results = [dict(scores[item.ticket_id]) for item in recorded]
    else:
        results = score_tickets(valid)
    for result, position in zip(results, kept, strict=True):
        sources, vendor_warnings = adapted.sources[position], adapted.event_warnings[position]
        warned = {w["field"] for w in vendor_warnings}
        model_warnings = [{**w, "field": sources.get(w["field"], w["field"])} for w in result["warnings"]]
        result["warnings"] = vendor_warnings + [w for w in model_warnings if w["field"] not in warned]
    if len(adapted.events) == 1 and not adapted.errors:
        return results[0]
    return {"results": results, "errors": errors}


STORE_PREFIX = "#event."


def store_field(adapted, kept: list[int], field: str) -> str:
    """A store error's field ("#event.0.created_at") as the vendor field of that event ("opened_at")."""
    match = re.match(rf"^{re.escape(STORE_PREFIX)}(\d+)\.(.*)$", field)
    if match is None:
        return field
    position = kept[int(match.group(1))] if int(match.group(1)) < len(kept) else kept[0]
    return adapted.sources[position].get(match.group(2), match.group(2))


def vendor_field(sources: dict[str, str], loc: tuple) -> str:
    """A canonical field of a validation error as the vendor's field it came from."""
    name = str(loc[0]) if loc else "(ticket)"
    return sources.get(name, f"(canonical) {'.'.join(str(p) for p in loc)}")


def replay_guard() -> ReplayGuard:
    """Created on first use: under gunicorn it shares the workers' folder (serving.live_model.WorkerFleet)."""
    guard = current_app.extensions.get("zendesk_replay")
    if guard is None:
        fleet = current_app.extensions["model"].fleet
        guard = ReplayGuard(current_app.extensions["settings"].zendesk_replay_window_seconds,
                            fleet.state_dir / "zendesk-signatures" if fleet else None)
        guard = current_app.extensions.setdefault("zendesk_replay", guard)
    return guard


@api.get("/v1/model")
def get_model() -> Response:
    """What is serving: version, training time, data window, metrics, bands and features."""
    holder = current_app.extensions["model"]
    bundle = current_bundle()
    meta = bundle.metadata
    return json_response({
        "name": current_app.extensions["settings"].registered_model_name,
        "version": bundle.version,
        "trained_at": meta.get("trained_at") or meta.get("created_at"),
        "source": holder.source,
        "registry_version": holder.registry_version,
        "loaded_at": holder.loaded_at.isoformat() if holder.loaded_at else None,
        "data_window": meta.get("data_window"),
        "metrics": meta.get("metrics"),
        "thresholds": meta.get("thresholds"),
        "labels": [{"name": label.name, "escalation_type": label.escalation_type, "definition": label.definition,
                    "thresholds": label.thresholds} for label in bundle.labels],
        "priority_classes": meta.get("priority_classes"),
        "features": meta.get("features"),
        "last_reload_error": holder.last_error,
        "workers": holder.fleet.workers() if holder.fleet else None,
    })


@api.get("/healthz")
def get_health() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@api.get("/readyz")
def get_readiness() -> Response:
    """Readiness: 503 until a verified model is loaded."""
    holder = current_app.extensions["model"]
    if holder.bundle is None:
        return json_response({"status": "unavailable", "error": holder.last_error}, 503)
    return json_response({"status": "ready", "version": holder.bundle.version, "last_reload_error": holder.last_error})


@api.get("/metrics")
def get_metrics() -> Response:
    """Prometheus text format; under gunicorn the sum over all workers."""
    return Response(current_app.extensions["metrics"].exposition(), content_type=CONTENT_TYPE_LATEST)  # has its charset


@api.post("/v1/admin/reload")
def reload_model() -> Response:
    """Load and verify the current model, then swap; a failure keeps the old model (409)."""
    settings = current_app.extensions["settings"]
    presented = presented_key(request)
    if not settings.admin_key or presented is None or not hmac.compare_digest(
        presented.encode(), settings.admin_key.encode()
    ):
        raise ApiError(401, "unauthorized", "admin key required (ESCALATION_RISK_ADMIN_KEY)")
    holder = current_app.extensions["model"]
    metrics = current_app.extensions["metrics"]
    outcome = holder.reload_everywhere()
    metrics.reloads.labels(outcome="ok" if outcome.ok else "failed").inc()
    metrics.set_model(holder.bundle.version if holder.bundle else None)
    body = {"reloaded": outcome.ok, "version": outcome.version, "source": outcome.source, "error": outcome.error,
            "workers": list(outcome.workers)}
    return json_response(body, 200 if outcome.ok else 409)


@api.get("/openapi.json")
def get_openapi() -> Response:
    return json_response(build_openapi(current_app.extensions["settings"]))


@api.get("/docs")
def get_docs() -> Response:
    """The API reference rendered on the server from /openapi.json (works offline)."""
    return Response(render_docs(build_openapi(current_app.extensions["settings"])), mimetype="text/html")
