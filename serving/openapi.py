"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from features.settings import Settings
from serving.policy import EscalationMatrix
from serving.schemas import Alert, AlertAck, AlertPage, ErrorBody, Score, ScoreBatch, Ticket, TicketBatch


def build_openapi(settings: Settings) -> dict:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (Ticket, TicketBatch, AlertAck)]
        + [(m, "serialization") for m in (Score, ScoreBatch, ErrorBody, EscalationMatrix, Alert, AlertPage)],
        ref_template="#/components/schemas/{model}",
    )
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    errors = {str(code): {"description": text, "content": {"application/json": {"schema": ref("ErrorBody")}}}
              for code, text in ((400, "malformed JSON"), (401, "missing or invalid API key"),
                                 (413, f"body larger than {settings.max_body_bytes} bytes"),
                                 (415, "not application/json"), (422, "invalid fields, each named"),
                                 (503, "no model loaded"))}
    json_ok = lambda schema: {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}  # noqa: E731
    score_body = {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [ref("Ticket"), ref("TicketBatch")]}}}}
    open_endpoint = {"security": []}
    return {
        "openapi": "3.1.0",
        "info": {"title": "escalation-risk scoring service", "version": "1",
                 "description": f"Batches hold at most {settings.max_batch} tickets."},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/score": {"post": {"summary": "Score one canonical ticket or {tickets: [...]}",
                                   "operationId": "score", "requestBody": score_body,
                                   "responses": {"200": {"description": "one Score, or ScoreBatch for a batch",
                                                         "content": {"application/json": {"schema": {
                                                             "oneOf": [ref("Score"), ref("ScoreBatch")]}}}},
                                                 **errors}}},
            "/v1/integrations/{system}": {"post": {
                "summary": "Score a ticket in the system's own payload (Zendesk ticket or event webhook, "
                           "ServiceNow incident, Freshdesk ticket)",
                "operationId": "score_integration",
                "parameters": [{"name": "system", "in": "path", "required": True,
                                "schema": {"enum": ["zendesk", "servicenow", "freshdesk"]}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {**json_ok(ref("Score")), **errors,
                              "404": {"description": "no such integration",
                                      "content": {"application/json": {"schema": ref("ErrorBody")}}}}}},
            **alert_paths(ref, json_ok, errors),
            "/v1/model": {"get": {"summary": "The model being served", "operationId": "get_model",
                                  "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/v1/admin/reload": {"post": {"summary": "Reload and verify the model, then swap (admin key)",
                                          "operationId": "reload_model",
                                          "responses": {**json_ok({"type": "object"}),
                                                        "401": errors["401"],
                                                        "409": {"description": "reload failed; old model kept"}}}},
            **report_paths(errors),
            "/healthz": {"get": {"summary": "Liveness", **open_endpoint, "responses": json_ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Readiness (503 until a verified model is loaded)", **open_endpoint,
                                "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", **open_endpoint,
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
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
{% if op.requestBody %}<p>Body: {{ schema_names(op.requestBody.content["application/json"].schema) }}</p>{% endif %}
<table><tr><th>status</th><th>meaning</th><th>body</th></tr>
{% for code, response in op.responses.items() %}<tr><td>{{ code }}</td><td>{{ response.description }}</td>
<td>{% for media, body in (response.content or {}).items() %}{{ media }}: {{ schema_names(body.schema) }}{{ "; " if not loop.last }}{% endfor %}</td></tr>
{% endfor %}</table></div>
{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, schema in doc.components.schemas.items() %}
<h3 id="schema-{{ name }}">{{ name }}</h3>
{% if schema.description %}<p>{{ schema.description }}</p>{% endif %}
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
    return f"{kind} ({spec['format']})" if "format" in spec else str(kind)


def render_docs(document: dict) -> str:
    """The API reference as one self-contained HTML page: no scripts, nothing fetched from a CDN."""
    from flask import render_template_string

    return render_template_string(DOCS_TEMPLATE, doc=document, type_name=_type_name, schema_names=_type_name)


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
