"""The scoring API through Flask's test client: responses, every error code, auth."""

from __future__ import annotations

import json
import re

import pytest

from tests.serving.conftest import ADMIN_KEY, API_KEY, AUTH, make_settings


def test_score_one_ticket_returns_the_full_response(client, wire_tickets):
    response = client.post("/v1/score", json=wire_tickets[0], headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["ticket_id"] == wire_tickets[0]["ticket_id"]
    escalation = body["escalation"]
    assert 0.0 <= escalation["probability"] <= 1.0
    assert escalation["band"] in {"low", "medium", "high"}
    assert isinstance(escalation["escalate_now"], bool)
    assert len(escalation["reasons"]) == 3
    for reason in escalation["reasons"]:
        assert set(reason) == {"feature", "label", "value", "effect", "direction"}
        assert reason["direction"] == ("raises risk" if reason["effect"] > 0 else "lowers risk")
    efforts = [abs(r["effect"]) for r in escalation["reasons"]]
    assert efforts == sorted(efforts, reverse=True)
    priority = body["priority"]
    assert set(priority["probabilities"]) == {"low", "normal", "high", "urgent"}
    assert sum(priority["probabilities"].values()) == pytest.approx(1.0)
    assert priority["predicted"] == max(priority["probabilities"], key=priority["probabilities"].get)
    assert set(body["action"]) == {"route_to", "tier", "escalation_type", "respond_within", "rule"}
    assert body["model"] == {"name": "escalation-risk", "version": "v1-small"}
    assert body["scored_at"].endswith("+00:00")
    assert response.headers["X-Request-ID"]


def test_batch_keeps_order_and_matches_single_scores(client, wire_tickets):
    batch = wire_tickets[:20]
    response = client.post("/v1/score", json={"tickets": batch}, headers=AUTH)
    assert response.status_code == 200
    scores = response.get_json()["scores"]
    assert [s["ticket_id"] for s in scores] == [t["ticket_id"] for t in batch]
    for ticket, batch_score in zip(batch[:3], scores[:3], strict=True):
        single = client.post("/v1/score", json=ticket, headers=AUTH).get_json()
        assert single["escalation"]["probability"] == pytest.approx(batch_score["escalation"]["probability"], abs=1e-12)


def test_minimal_ticket_with_numeric_id_is_scored(client):
    ticket = {"ticket_id": 991, "event_time": "2025-12-01T10:00:00", "created_at": "2025-12-01T09:00:00Z"}
    response = client.post("/v1/score", json=ticket, headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["ticket_id"] == "991"


@pytest.mark.parametrize(
    ("ticket", "fields"),
    [
        ({"ticket_id": "A"}, {"event_time", "created_at"}),
        ({"ticket_id": "A", "event_time": "yesterday", "created_at": "2025-01-01T00:00:00Z"}, {"event_time"}),
        ({"ticket_id": "A", "event_time": "2025-01-02T00:00:00Z", "created_at": "2025-01-01T00:00:00Z",
          "priority": "super", "customer_messages": -1, "reopen_count": "many"},
         {"priority", "customer_messages", "reopen_count"}),
        ({"ticket_id": "", "event_time": "2025-01-02T00:00:00Z", "created_at": "2025-01-01T00:00:00Z"}, {"ticket_id"}),
    ],
)
def test_invalid_ticket_names_every_bad_field(client, ticket, fields):
    response = client.post("/v1/score", json=ticket, headers=AUTH)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "invalid_ticket"
    assert {d["field"] for d in body["details"]} == fields


def test_update_before_creation_is_422(client, wire_tickets):
    ticket = {"ticket_id": "A", "event_time": "2025-01-01T00:00:00Z", "created_at": "2025-01-02T00:00:00Z"}
    response = client.post("/v1/score", json=ticket, headers=AUTH)
    assert response.status_code == 422
    [detail] = response.get_json()["details"]
    assert detail["field"] == "created_at" and "after event_time" in detail["message"], detail
    batch = client.post("/v1/score", json={"tickets": [wire_tickets[0], ticket]}, headers=AUTH).get_json()
    assert [(e["index"], e["field"]) for e in batch["errors"]] == [(1, "created_at")], batch


def test_a_time_read_from_a_small_number_is_422(client):
    """12 would be read as 1970-01-01T00:00:12 (epoch seconds): not a ticket's time."""
    response = client.post("/v1/score", json={"ticket_id": "A", "event_time": 13, "created_at": 12}, headers=AUTH)
    assert response.status_code == 422
    assert {d["field"] for d in response.get_json()["details"]} == {"event_time", "created_at"}


def test_batch_scores_the_good_tickets_and_names_the_bad_ones(client, wire_tickets):
    batch = [wire_tickets[0], {**wire_tickets[1], "created_at": None}, wire_tickets[2],
             {**wire_tickets[3], "event_time": "soon", "customer_messages": -2}]
    response = client.post("/v1/score", json={"tickets": batch}, headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert [r["ticket_id"] for r in body["results"]] == [wire_tickets[0]["ticket_id"], wire_tickets[2]["ticket_id"]]
    assert [(e["index"], e["ticket_id"], e["field"]) for e in body["errors"]] == [
        (1, wire_tickets[1]["ticket_id"], "created_at"), (3, wire_tickets[3]["ticket_id"], "event_time"),
        (3, wire_tickets[3]["ticket_id"], "customer_messages")]
    assert "scores" not in body, "old clients reading `scores` fail loudly instead of mispairing"
    alone = client.post("/v1/score", json=wire_tickets[2], headers=AUTH).get_json()
    assert body["results"][1]["escalation"] == alone["escalation"]


def test_batch_that_scored_in_full_keeps_the_old_scores_field(client, wire_tickets):
    body = client.post("/v1/score", json={"tickets": wire_tickets[:3]}, headers=AUTH).get_json()
    assert body["errors"] == [] and body["scores"] == body["results"] and len(body["results"]) == 3


def test_batch_with_no_good_ticket_or_strict_is_422_naming_each_position(client, wire_tickets):
    bad = {**wire_tickets[1], "created_at": None}
    response = client.post("/v1/score", json={"tickets": [bad, bad]}, headers=AUTH)
    assert response.status_code == 422
    assert [d["field"] for d in response.get_json()["details"]] == ["tickets.0.created_at", "tickets.1.created_at"]
    strict = client.post("/v1/score?strict=true", json={"tickets": [wire_tickets[0], bad]}, headers=AUTH)
    assert strict.status_code == 422
    assert [d["field"] for d in strict.get_json()["details"]] == ["tickets.1.created_at"]
    assert client.post("/v1/score?strict=true", json={"tickets": [wire_tickets[0]]}, headers=AUTH).status_code == 200
    wrong = client.post("/v1/score?strict=perhaps", json={"tickets": [wire_tickets[0]]}, headers=AUTH)
    assert wrong.status_code == 422 and wrong.get_json()["details"][0]["field"] == "strict"


def test_unseen_category_is_warned_and_case_does_not_matter(client):
    ticket = {"ticket_id": "N1", "event_time": "2025-12-01T10:00:00Z", "created_at": "2025-12-01T09:00:00Z",
              "channel": "email", "category": "billing", "customer_tier": "gold", "status": "open", "priority": "high"}
    lower = client.post("/v1/score", json=ticket, headers=AUTH).get_json()
    assert lower["warnings"] == []
    shouted = {**ticket, "channel": " Email ", "category": "BILLING", "customer_tier": "Gold", "status": "Open",
               "priority": "High"}
    assert client.post("/v1/score", json=shouted, headers=AUTH).get_json()["escalation"] == lower["escalation"]
    fax = client.post("/v1/score", json={**ticket, "channel": "Fax"}, headers=AUTH).get_json()
    assert fax["warnings"] == [{"field": "channel", "value": "fax", "message": fax["warnings"][0]["message"]}]
    assert "scored as 'other'" in fax["warnings"][0]["message"]


def test_batch_over_the_limit_is_422(client, wire_tickets):
    response = client.post("/v1/score", json={"tickets": wire_tickets[:51]}, headers=AUTH)
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "tickets"


@pytest.mark.parametrize("body", [[], "text", 3, {"tickets": []}, {"tickets": "x"}])
def test_wrong_shape_is_422(client, body):
    response = client.post("/v1/score", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.is_json
    assert response.get_json()["details"], "the error names what is wrong in details too"


def test_malformed_json_is_400(client):
    response = client.post("/v1/score", data=b'{"ticket_id": ', content_type="application/json", headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert response.get_json()["details"][0]["field"] == "(body)"
    for path in ("/v1/events", "/v1/feedback"):
        shape = client.post(path, json=[1, 2, 3], headers=AUTH)
        assert shape.status_code == 422, (path, shape.get_json())
        assert shape.get_json()["details"][0]["field"] == "(body)", (path, shape.get_json())


def test_other_content_type_is_415(client):
    response = client.post("/v1/score", data="ticket_id=1", content_type="text/plain", headers=AUTH)
    assert response.status_code == 415
    assert response.is_json


def test_body_over_the_limit_is_413(client):
    big = b'{"ticket_id": "A", "description": "' + b"x" * (300 * 1024) + b'"}'
    response = client.post("/v1/score", data=big, content_type="application/json", headers=AUTH)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"


def test_unknown_path_is_json_404_and_wrong_method_is_json_405(client):
    missing = client.get("/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.is_json
    wrong = client.get("/v1/score", headers=AUTH)
    assert wrong.status_code == 405 and wrong.is_json
    assert "POST" in wrong.headers["Allow"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {API_KEY}"}],
)
def test_scoring_needs_a_valid_key(client, wire_tickets, headers):
    response = client.post("/v1/score", json=wire_tickets[0], headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert client.get("/v1/model", headers=headers).status_code == 401


def test_x_api_key_header_is_accepted(client, wire_tickets):
    assert client.post("/v1/score", json=wire_tickets[0], headers={"X-API-Key": API_KEY}).status_code == 200


def test_health_metrics_and_docs_stay_open(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].count("charset") == 1, metrics.headers["Content-Type"]
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_logs_are_json_with_a_request_id_and_no_keys_or_text(client, wire_tickets, caplog):
    from serving.app import JsonFormatter

    with caplog.at_level("INFO", logger="escalation_risk"):
        client.post("/v1/score", json=wire_tickets[0], headers={**AUTH, "X-Request-ID": "req-42"})
        client.post("/v1/score", json=wire_tickets[0], headers={"Authorization": "Bearer leaked-guess"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "request"]
    assert [(e["request_id"], e["status"]) for e in lines][0] == ("req-42", 200)
    assert lines[1]["status"] == 401
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert API_KEY not in logged and "leaked-guess" not in logged
    assert wire_tickets[0]["description"][:30] not in logged


def test_model_endpoint_describes_the_bundle(client, small_result):
    body = client.get("/v1/model", headers=AUTH).get_json()
    assert body["version"] == "v1-small"
    assert body["thresholds"]["high"] >= body["thresholds"]["medium"]
    assert body["metrics"]["test_roc_auc"] == pytest.approx(small_result.metrics["test_roc_auc"])
    assert body["trained_at"]
    assert body["data_window"]
    assert body["features"]
    assert [label["name"] for label in body["labels"]] == [label.name for label in small_result.labels]
    assert body["labels"][0]["thresholds"] == body["thresholds"], "the primary label's bands are the top-level ones"


def test_metrics_count_requests_scores_and_model_version(client, wire_tickets):
    client.post("/v1/score", json={"tickets": wire_tickets[:5]}, headers=AUTH)
    client.post("/v1/score", json={}, headers=AUTH)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'escalation_risk_requests_total{endpoint="/v1/score",method="POST",status="200"} 1.0' in text
    assert 'escalation_risk_requests_total{endpoint="/v1/score",method="POST",status="422"} 1.0' in text
    assert "escalation_risk_request_seconds_bucket" in text
    bands = [line for line in text.splitlines() if line.startswith("escalation_risk_scores_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in bands) == 5
    assert 'escalation_risk_model_info{version="v1-small"} 1.0' in text


def test_openapi_is_generated_from_the_request_models(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    ticket = doc["components"]["schemas"]["Ticket"]
    assert set(ticket["required"]) == {"ticket_id", "event_time", "created_at"}
    assert {"/v1/score", "/v1/integrations/{system}", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])


def test_every_route_is_in_the_openapi_document(app, client):
    """Clients and schemathesis see every endpoint, the report routes included."""
    documented = {(method.upper(), path) for path, item in client.get("/openapi.json").get_json()["paths"].items()
                  for method in item}
    served = {(method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served - documented == {("GET", "/openapi.json"), ("GET", "/docs")}


def test_without_a_model_readiness_and_scoring_are_503(tmp_path, wire_tickets):
    from serving import create_app

    app = create_app(make_settings(tmp_path / "empty_models"))
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "run `make train`" in ready.get_json()["error"]
    assert client.get("/healthz").status_code == 200
    response = client.post("/v1/score", json=wire_tickets[0], headers=AUTH)
    assert response.status_code == 503 and response.get_json()["error"] == "model_unavailable"


def test_without_keys_the_service_starts_on_loopback_and_warns(serving_models_dir, wire_tickets, caplog):
    from serving import create_app

    with caplog.at_level("INFO", logger="escalation_risk"):
        client = create_app(make_settings(serving_models_dir, api_keys=[])).test_client()
    assert "no API keys configured" in caplog.text
    assert client.post("/v1/score", json=wire_tickets[0]).status_code == 200


def test_without_keys_a_public_bind_is_refused(serving_models_dir):
    from serving import create_app

    with pytest.raises(RuntimeError, match="without API keys"):
        create_app(make_settings(serving_models_dir, api_keys=[], host="0.0.0.0"))


def test_admin_reload_needs_the_admin_key(client):
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 401
    response = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    assert response.get_json()["reloaded"] is True


def test_concurrent_requests_get_the_same_scores_as_sequential_ones(client, wire_tickets):
    """Worker threads share one model: scores under concurrency equal the sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    tickets = wire_tickets[:40]
    sequential = [client.post("/v1/score", json=t, headers=AUTH).get_json()["escalation"] for t in tickets]

    def score(ticket: dict) -> dict:
        return client.post("/v1/score", json=ticket, headers=AUTH).get_json()["escalation"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(score, tickets * 3))
    assert concurrent == sequential * 3


def test_docs_page_is_self_contained_and_lists_every_endpoint(client):
    """The docs page is rendered from /openapi.json on the server: no CDN, no scripts, no network."""
    html = client.get("/docs").get_data(as_text=True)
    document = client.get("/openapi.json").get_json()
    for path in document["paths"]:
        assert f"<code>{path}</code>" in html
    for name in ("Ticket", "Score", "ErrorBody"):
        assert f'id="schema-{name}"' in html
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the docs page must not load anything remote"
