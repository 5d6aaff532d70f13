"""The alert endpoints on the app with a real SQLite store: list, read, acknowledge (durable), JSON errors,
the alert timeline in GET /v1/tickets/{id}, and a bad destinations file stopping start-up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serving.alerts import Sighting
from serving.app import close_app
from serving.destinations import DestinationError
from tests.serving.conftest import AUTH, make_settings
from tests.serving.test_alerts import score


@pytest.fixture()
def alert_app(tmp_path, serving_models_dir, wire_tickets):
    from serving import create_app

    settings = make_settings(serving_models_dir, store_url=f"sqlite:///{tmp_path / 'tickets.db'}")
    app = create_app(settings)
    app.extensions["ticket_store"].record_events(wire_tickets[:3], "test")
    ticket_id = str(wire_tickets[0]["ticket_id"])
    [alert_id] = app.extensions["alert_store"].apply_sightings(
        [Sighting(ticket_id, score(ticket_id, 0.7, "high", True), team="billing_team")], datetime.now(UTC))
    yield app, ticket_id, alert_id
    close_app(app)


def test_list_read_and_acknowledge(alert_app):
    app, ticket_id, alert_id = alert_app
    client = app.test_client()
    page = client.get("/v1/alerts?status=open&team=billing_team", headers=AUTH).get_json()
    assert page["total"] == 1 and page["alerts"][0]["alert_id"] == alert_id
    assert client.get("/v1/alerts?status=closed", headers=AUTH).get_json()["total"] == 0
    assert client.get("/v1/alerts?min_age_hours=1", headers=AUTH).get_json()["total"] == 0
    ack = client.post(f"/v1/alerts/{alert_id}/ack", json={"by": "lead@example.com", "verdict": "acting",
                                                         "note": "calling the customer"}, headers=AUTH)
    assert ack.status_code == 200 and ack.get_json()["status"] == "acknowledged"
    # durable: a fresh read from the store sees it
    stored = app.extensions["alert_store"].get_alert(alert_id)
    assert stored["acknowledgement"]["verdict"] == "acting"
    again = client.post(f"/v1/alerts/{alert_id}/ack", json={"by": "x", "verdict": "agree"}, headers=AUTH)
    assert again.status_code == 409 and again.get_json()["error"] == "already_acknowledged"
    ticket = client.get(f"/v1/tickets/{ticket_id}", headers=AUTH).get_json()
    assert [e["kind"] for e in ticket["alerts"][0]["timeline"]] == ["raised", "acknowledged"]
    assert client.get(f"/v1/alerts/{alert_id}", headers=AUTH).get_json()["timeline"][-1]["by"] == "lead@example.com"


@pytest.mark.parametrize("path", ["/v1/alerts/999999/ack", "/v1/alerts/abc/ack"])
def test_ack_of_an_unknown_alert_is_a_json_404(alert_app, path):
    app, _, _ = alert_app
    response = app.test_client().post(path, json={"by": "a", "verdict": "agree"}, headers=AUTH)
    assert response.status_code == 404 and response.is_json
    assert response.get_json()["details"] == [{"field": "alert_id", "message": "unknown alert id"}]


def test_bad_ack_and_bad_filters_name_the_field(alert_app):
    app, _, alert_id = alert_app
    client = app.test_client()
    bad = client.post(f"/v1/alerts/{alert_id}/ack", json={"by": "", "verdict": "maybe", "colour": 1}, headers=AUTH)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.get_json()["details"]} == {"by", "verdict", "colour"}
    listed = client.post(f"/v1/alerts/{alert_id}/ack", json=[{"by": "x", "verdict": "agree"}], headers=AUTH)
    assert listed.status_code == 422 and [d["field"] for d in listed.get_json()["details"]] == ["(body)"]
    assert "JSON object" in listed.get_json()["message"]
    assert client.get("/v1/alerts?status=new", headers=AUTH).get_json()["details"][0]["field"] == "status"
    assert client.get("/v1/alerts?max_age_hours=-1", headers=AUTH).status_code == 422
    assert client.get("/v1/alerts", headers={}).status_code == 401
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/v1/alerts", "/v1/alerts/{alert_id}", "/v1/alerts/{alert_id}/ack"} <= set(paths)


def test_bad_destinations_file_stops_the_service(tmp_path, serving_models_dir):
    from serving import create_app

    path = tmp_path / "destinations.yaml"
    path.write_text("destinations:\n  - name: hook\n    type: pager\n    url: https://x.example\n")
    with pytest.raises(DestinationError, match=r"destinations.yaml is invalid: line 3: destinations.0.type"):
        create_app(make_settings(serving_models_dir, store_url=f"sqlite:///{tmp_path / 't.db'}",
                                 destinations_path=path))
