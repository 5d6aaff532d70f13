"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from features.settings import Settings
from serving.policy import EscalationMatrix
from serving.schemas import ErrorBody, Score, ScoreBatch, Ticket, TicketBatch


def build_openapi(settings: Settings) -> dict:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (Ticket, TicketBatch)]
        + [(m, "serialization") for m in (Score, ScoreBatch, ErrorBody, EscalationMatrix)],
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
            "/v1/model": {"get": {"summary": "The model being served", "operationId": "get_model",
                                  "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/v1/admin/reload": {"post": {"summary": "Reload and verify the model, then swap (admin key)",
                                          "operationId": "reload_model",
                                          "responses": {**json_ok({"type": "object"}),
                                                        "401": errors["401"],
                                                        "409": {"description": "reload failed; old model kept"}}}},
            "/healthz": {"get": {"summary": "Liveness", **open_endpoint, "responses": json_ok({"type": "object"})}},
            "/readyz": {"get": {"summary": "Readiness (503 until a verified model is loaded)", **open_endpoint,
                                "responses": {**json_ok({"type": "object"}), "503": errors["503"]}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", **open_endpoint,
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
    }


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>escalation-risk API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"><p>API reference: <a href="/openapi.json">/openapi.json</a></p></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>window.SwaggerUIBundle && SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
