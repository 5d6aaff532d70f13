"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from features.settings import Settings
from serving.integration_docs import integration_operation, integration_schemas
from serving.policy import EscalationMatrix
from serving.schemas import (
    Alert,
    AlertAck,
    AlertPage,
    ErrorBody,
    EventBatch,
    Feedback,
    Score,
    ScoreBatch,
    Ticket,
    TicketBatch,
    TicketEvent,
)


def build_openapi(settings: Settings) -> dict:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (Ticket, TicketBatch, TicketEvent, EventBatch, AlertAck, Feedback)]
        + [(m, "serialization") for m in (Score, ScoreBatch, ErrorBody, EscalationMatrix, Alert, AlertPage)],
        ref_template="#/components/schemas/{model}",
    )
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    errors = {str(code): {"description": text, "content": {"application/json": {"schema": ref("ErrorBody")}}}
              for code, text in ((400, "malformed JSON"), (401, "missing or invalid API key"),
                                 (413, f"body larger than {settings.max_body_bytes} bytes"),
                                 (415, "not application/json"), (422, "invalid fields, each named"),
                                 (503, "no model loaded, or the ticket store is busy or full (Retry-After "
                                       "says when to try again; nothing was written)"))}
    json_ok = lambda schema: {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}  # noqa: E731
    score_body = {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [ref("Ticket"), ref("TicketBatch")]}}}}
    open_endpoint = {"security": []}
    strict = {"name": "strict", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
              "description": "true: one bad ticket refuses the whole batch (422), nothing is scored"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "escalation-risk scoring service", "version": "1",
                 "description": f"Batches hold at most {settings.max_batch} tickets."},
        "components": {
            "schemas": {**schemas["$defs"], **integration_schemas()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/score": {"post": {"summary": "Score one canonical ticket or {tickets: [...]}",
                                   "description": "A batch scores its valid tickets: 200 with {results, errors} "
                                                  "when at least one scored (errors name each bad ticket's "
                                                  "index, ticket_id and field), 422 when none did; ?strict=true "
                                                  "refuses the whole batch for one bad ticket. `scores` repeats "
                                                  "`results` only when every ticket scored (the former batch "
                                                  "answer, kept for old clients).",
                                   "operationId": "score", "requestBody": score_body, "parameters": [strict],
                                   "responses": {"200": {"description": "one Score, or ScoreBatch for a batch",
                                                         "content": {"application/json": {"schema": {
                                                             "oneOf": [ref("Score"), ref("ScoreBatch")]}}}},
                                                 **errors}}},
            "/v1/integrations/{system}": {"post": integration_operation(ref, errors)},
            **ticket_paths(errors, ref, json_ok),
            **alert_paths(ref, json_ok, errors),
            "/v1/model": {"get": {"summary": "The model being served", "operationId": "get_model",
                                  "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/v1/admin/reload": {"post": {"summary": "Reload and verify the model, then swap (admin key)",
                                          "operationId": "reload_model",
                                          "responses": {**json_ok({"type": "object"}),
                                                        "401": errors["401"],
                                                        "409": {"description": "reload failed; old model kept"}}}},
            **report_paths(errors),
            **ops_paths(errors, ref, json_ok),
            "/healthz": {"get": {"summary": "Liveness", **open_endpoint, "responses": json_ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Readiness (503 until a verified model is loaded)", **open_endpoint,
                                "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", **open_endpoint,
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
    }


def ticket_paths(errors: dict, ref, json_ok) -> dict:
    """The ticket store's routes (serving/ticket_routes.py); 404 everywhere when ESCALATION_RISK_STATE=off."""
    not_found = {"404": {"description": "unknown ticket, or the service keeps no state (ESCALATION_RISK_STATE=off)",
                         "content": {"application/json": {"schema": ref("ErrorBody")}}}}
    recorded = {"type": "object", "description": "the ticket's Score, plus event {id, duplicate}",
                "properties": {"event": {"type": "object", "properties": {"id": {"type": "integer"},
                                                                             "duplicate": {"type": "boolean"}}}}}
    batch = {"type": "object", "properties": {
        "scores": {"type": "array", "items": ref("Score"), "description": "one per ticket, in first-seen order"},
        "events": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "ticket_id": {"type": "string"}, "id": {"type": "integer"},
            "duplicate": {"type": "boolean"}}}}}}
    query = lambda name, description, schema: {"name": name, "in": "query", "required": False,  # noqa: E731
                                                "description": description, "schema": schema}
    return {
        "/v1/events": {"post": {
            "summary": "Merge full or partial ticket events into the ticket store and score each ticket",
            "description": "A full canonical ticket, or `partial: true` with ticket_id, event_time and only what "
                           "changed (created_at is required for a ticket the store has not seen). A customer_message "
                           "increments customer_messages and becomes last_customer_message; an agent_message "
                           "increments agent_messages; a group change increments reassignment_count; closed -> "
                           "open increments reopen_count; an escalation_level rise is an escalation; a counter "
                           "sent explicitly wins. Late events merge in event-time order. The same delivery twice "
                           "(same source_event_id, or same ticket, time and content) is recorded once and answered "
                           "with the same score. A 200 means the events are committed.",
            "operationId": "post_events",
            "parameters": [query("source", "the sender's name, kept with each event (default api)",
                                 {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"oneOf": [ref("TicketEvent"), ref("EventBatch")]}}}},
            "responses": {"200": {"description": "one event: its ticket's score; a batch: scores and events",
                                  "content": {"application/json": {"schema": {"oneOf": [recorded, batch]}}}},
                          **errors, **not_found}}},
        "/v1/tickets/{ticket_id}": {"get": {
            "summary": "A ticket's latest state, latest score (reasons and the feature values behind it) and timeline",
            "operationId": "get_ticket",
            "parameters": [{"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {**json_ok({"type": "object", "properties": {
                "ticket_id": {"type": "string"}, "state": {"type": "object"}, "open": {"type": "boolean"},
                "events": {"type": "integer"}, "latest_score": {
                    "type": ["object", "null"],
                    "description": "the ticket's latest score, whoever gave it (the one GET /v1/queue orders by): "
                                   "the score response plus source, reasons_computed and features",
                    "properties": {"source": {"type": "string", "enum": ["request", "watcher"]},
                                   "reasons_computed": {"type": "boolean"},
                                   "scored_at": {"type": "string", "format": "date-time"},
                                   "features": {"type": ["object", "null"]}}},
                "timeline": {"type": "array", "items": {"type": "object"}}}}),
                "401": errors["401"], "503": errors["503"], **not_found}}},
        "/v1/queue": {"get": {
            "summary": "Open tickets ordered by current risk (highest first), filtered and paged",
            "operationId": "get_queue",
            "parameters": [query("band", "only this band", {"enum": ["low", "medium", "high"]}),
                           query("group", "only this team", {"type": "string"}),
                           query("agent", "only this agent id", {"type": "string"}),
                           query("category", "only this category", {"type": "string"}),
                           query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500,
                                                         "default": 50}),
                           query("offset", "tickets to skip", {"type": "integer", "minimum": 0, "default": 0})],
            "responses": {**json_ok({"type": "object", "properties": {
                "tickets": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"},
                "limit": {"type": "integer"}, "offset": {"type": "integer"}}}),
                "401": errors["401"], "422": errors["422"], "503": errors["503"], **not_found}}},
    }


def ops_paths(errors: dict, ref, json_ok) -> dict:
    """The ops view (serving/ops.py, serving/dashboard.py); 404 when ESCALATION_RISK_STATE=off."""
    not_found = {"404": {"description": "unknown ticket, or the service keeps no state (ESCALATION_RISK_STATE=off)",
                         "content": {"application/json": {"schema": ref("ErrorBody")}}}}
    return {
        "/v1/feedback": {"post": {
            "summary": "A verdict on a ticket's score (agree / disagree), optionally its true outcome and type",
            "description": "Committed before the 201 answer, with the score it judges. Outcomes received before a "
                           "cut-off are folded into training data by `escalation-risk store export --before`.",
            "operationId": "post_feedback",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Feedback")}}},
            "responses": {"201": {"description": "the stored feedback", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **errors, **not_found}}},
        "/v1/health": {"get": {
            "summary": "The live view: against case mix, repeat issues, model health from outcomes, drift, "
                       "retrain recommendation (recomputed when older than twice the monitoring interval)",
            "operationId": "get_health",
            "parameters": [{"name": "refresh", "in": "query", "required": False, "description": "1: recompute now",
                            "schema": {"enum": ["0", "1"], "default": "0"}}],
            "responses": {**json_ok({"type": "object"}), "401": errors["401"], "503": errors["503"], **not_found}}},
        "/dashboard": {"get": {
            "summary": "The ops lead's live page (HTML, server-rendered, no scripts)",
            "description": "With API keys configured: a key as Bearer, X-API-Key, or HTTP Basic password.",
            "operationId": "get_dashboard",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "401": errors["401"], "503": errors["503"], **not_found}}},
        "/dashboard/alerts/{alert_id}/ack": {"post": {
            "summary": "The dashboard's acknowledge form (application/x-www-form-urlencoded: who, verdict, note, "
                       "token); 303 back to the dashboard",
            "operationId": "post_dashboard_ack",
            "parameters": [{"name": "alert_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["who", "verdict"], "properties": {
                    "who": {"type": "string", "maxLength": 255},
                    "verdict": {"enum": ["acting", "agree", "disagree", "already_handled"]},
                    "note": {"type": "string", "maxLength": 2000}, "token": {"type": "string"}}}}}},
            "responses": {"303": {"description": "acknowledged; back to /dashboard"}, "401": errors["401"],
                          "403": {"description": "posted from another site, or a wrong form token"},
                          "404": not_found["404"], "409": {"description": "already acknowledged or closed"},
                          "422": errors["422"]}}},
    }


def report_paths(errors: dict) -> dict:
    """The ops leads' report routes (serving/reports.py): HTML, or its JSON and CSV copies."""
    from bundle.report import REPORT_FILES

    def error(code: int, text: str) -> dict:
        return {str(code): {**errors.get(str(code), {}), "description": text,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}

    html = {"200": {"description": "the report as one self-contained HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}}}}
    any_file = {"200": {"description": "a file of the report (HTML, JSON or CSV)",
                        "content": {t: {"schema": {"type": "string"} if t != "application/json" else {"type": "object"}}
                                    for t in ("text/html", "application/json", "text/csv")}}}
    version = {"name": "version", "in": "path", "required": True,
               "schema": {"type": "string"}, "description": "model version: letters, digits, '.', '_' and '-'"}
    name = {"name": "name", "in": "path", "required": True, "schema": {"enum": list(REPORT_FILES)}}
    unauthorized = error(401, "missing or invalid API key")
    missing = error(404, "no such report, version or file")
    no_model = error(503, "no model loaded (for latest)")
    bad_version = error(400, "not a model version name")
    return {
        "/reports": {"get": {"summary": "Versions with a rendered report, and the loaded one", "operationId":
                             "list_reports", "responses": {"200": {"description": "OK", "content": {
                                 "application/json": {"schema": {"type": "object"}}}}, **unauthorized}}},
        "/reports/latest": {"get": {"summary": "The loaded model's report (rendered on first request)",
                                    "operationId": "get_latest_report",
                                    "responses": {**html, **unauthorized, **missing, **no_model}}},
        "/reports/latest/{name}": {"get": {"summary": "A file of the loaded model's report",
                                           "operationId": "get_latest_report_file", "parameters": [name],
                                           "responses": {**any_file, **unauthorized, **missing, **no_model}}},
        "/reports/{version}": {"get": {"summary": "A model version's report", "operationId": "get_report",
                                       "parameters": [version],
                                       "responses": {**html, **bad_version, **unauthorized, **missing, **no_model}}},
        "/reports/{version}/{name}": {"get": {"summary": "A file of a model version's report",
                                              "operationId": "get_report_file", "parameters": [version, name],
                                              "responses": {**any_file, **bad_version, **unauthorized, **missing,
                                                            **no_model}}},
    }


DOCS_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ doc.info.title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
.op { border: 1px solid #ddd; border-radius: 4px; margin: 1rem 0; padding: .5rem 1rem; }
.method { font-weight: bold; text-transform: uppercase; display: inline-block; min-width: 4rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; font-size: .9rem; }
td, th { border-bottom: 1px solid #eee; text-align: left; padding: .2rem .4rem; vertical-align: top; }
code { background: #f4f4f4; padding: 0 .2rem; }
</style></head>
<body>
<h1>{{ doc.info.title }}</h1>
<p>{{ doc.info.description }} The machine-readable contract is <a href="openapi.json">/openapi.json</a>
(OpenAPI {{ doc.openapi }}). Send API keys as <code>Authorization: Bearer &lt;key&gt;</code> or
<code>X-API-Key</code>.</p>
<h2>Endpoints</h2>
{% for path, item in doc.paths.items() %}{% for method, op in item.items() %}
<div class="op" id="{{ op.operationId or path }}">
<p><span class="method">{{ method }}</span> <code>{{ path }}</code> — {{ op.summary }}
{% if op.security == [] %}(no key needed){% endif %}</p>
{% if op.description %}<p>{{ op.description }}</p>{% endif %}
{% if op.parameters %}<p>Parameters: {% for p in op.parameters %}<code>{{ p.name }}</code> ({{ p["in"] }}{% if p.description %}: {{ p.description }}{% endif %}){{ "; " if not loop.last }}{% endfor %}</p>{% endif %}
{% if op.requestBody %}{% for media, body in op.requestBody.content.items() %}<p>Body ({{ media }}): {{ schema_names(body.schema) }}</p>
{% for name, example in (body.examples or {}).items() %}
<details id="example-{{ name }}"><summary>Example: {{ example.summary }}</summary><pre>{{ to_json(example.value) }}</pre></details>
{% endfor %}{% endfor %}{% endif %}
<table><tr><th>status</th><th>meaning</th><th>body</th></tr>
{% for code, response in op.responses.items() %}<tr><td>{{ code }}</td><td>{{ response.description }}</td>
<td>{% for media, body in (response.content or {}).items() %}{{ media }}: {{ schema_names(body.schema) }}{{ "; " if not loop.last }}{% endfor %}</td></tr>
{% endfor %}</table></div>
{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, schema in doc.components.schemas.items() %}
<h3 id="schema-{{ name }}">{{ name }}</h3>
{% if schema.description %}<p>{{ schema.description }}</p>{% endif %}
{% if schema.oneOf %}<p>One of: {{ schema_names(schema) }}</p>{% endif %}
{% if schema.properties %}<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>
{% for field, spec in schema.properties.items() %}<tr><td><code>{{ field }}</code></td>
<td>{{ type_name(spec) }}</td><td>{{ "yes" if field in schema.get("required", []) else "" }}</td>
<td>{{ spec.description or "" }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}
</body></html>
"""


def _type_name(spec: dict) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec or "oneOf" in spec:
        return " or ".join(_type_name(s) for s in spec.get("anyOf", spec.get("oneOf", [])))
    if spec.get("type") == "array":
        return f"list of {_type_name(spec.get('items', {}))}"
    if "enum" in spec:
        return "one of " + ", ".join(str(v) for v in spec["enum"])
    kind = spec.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    return f"{kind} ({spec['format']})" if "format" in spec else str(kind)


def render_docs(document: dict) -> str:
    """The API reference as one self-contained HTML page: no scripts, nothing fetched from a CDN."""
    import json

    from flask import render_template_string

    return render_template_string(DOCS_TEMPLATE, doc=document, type_name=_type_name, schema_names=_type_name,
                                  to_json=lambda value: json.dumps(value, indent=2, ensure_ascii=False))


def alert_paths(ref, json_ok, errors: dict) -> dict:
    """GET /v1/alerts, GET /v1/alerts/{alert_id}, POST /v1/alerts/{alert_id}/ack (serving/alert_routes.py)."""
    error = {"content": {"application/json": {"schema": ref("ErrorBody")}}}
    alert_id = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    query = [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
             for name, schema, text in (
                 ("status", {"enum": ["open", "acknowledged", "closed"]}, "the alert's status"),
                 ("team", {"type": "string"}, "the ticket's group when the alert was raised"),
                 ("route_to", {"type": "string"}, "the escalation matrix's route"),
                 ("ticket_id", {"type": "string"}, "one ticket's alerts"),
                 ("min_age_hours", {"type": "number", "minimum": 0}, "raised at least this many hours ago"),
                 ("max_age_hours", {"type": "number", "minimum": 0}, "raised at most this many hours ago"),
                 ("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (default 50)"),
                 ("offset", {"type": "integer", "minimum": 0}, "rows to skip"))]
    return {
        "/v1/alerts": {"get": {"summary": "Alerts raised by the queue watcher, newest first", "operationId": "list_alerts",
                               "parameters": query,
                               "responses": {**json_ok(ref("AlertPage")), "401": errors["401"], "422": errors["422"],
                                             "404": {"description": "the service keeps no state", **error}}}},
        "/v1/alerts/{alert_id}": {"get": {
            "summary": "One alert with its timeline (raised, delivered, acknowledged, outcome)",
            "operationId": "get_alert", "parameters": [alert_id],
            "responses": {**json_ok(ref("Alert")), "401": errors["401"],
                          "404": {"description": "no such alert", **error}}}},
        "/v1/alerts/{alert_id}/ack": {"post": {
            "summary": "Acknowledge an alert: who, a verdict and a note (durable when answered 200)",
            "operationId": "acknowledge_alert", "parameters": [alert_id],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("AlertAck")}}},
            "responses": {**json_ok(ref("Alert")), "401": errors["401"], "422": errors["422"],
                          "404": {"description": "no such alert", **error},
                          "409": {"description": "already acknowledged", **error}}}},
    }
