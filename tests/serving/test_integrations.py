"""Zendesk, ServiceNow and Freshdesk payloads (fixtures from their documented examples)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.adapters import map_freshdesk, map_servicenow, map_zendesk
from tests.serving.conftest import AUTH, make_settings

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_zendesk_ticket_maps_to_the_canonical_ticket():
    ticket = map_zendesk(load("zendesk_ticket.json"))
    assert ticket["ticket_id"] == "35436"
    assert (ticket["channel"], ticket["priority"], ticket["status"]) == ("web", "high", "open")
    assert (ticket["customer_id"], ticket["agent_id"], ticket["group"]) == ("20978392", "235323", "98738")
    assert ticket["customer_tier"] == "vip"
    assert ticket["category"] == "billing"
    assert ticket["event_time"] == "2025-07-21T10:05:11Z"


def test_zendesk_event_webhook_maps_with_upper_case_enums_and_string_ids():
    ticket = map_zendesk(load("zendesk_event.json"))
    assert ticket["ticket_id"] == "5158"
    assert (ticket["priority"], ticket["status"], ticket["channel"]) == ("low", "open", "web")
    assert ticket["event_time"] == "2025-01-08T10:12:07.672717030Z"


@pytest.mark.parametrize(("via", "channel"), [(4, "email"), ("34", "phone"), ("chat", "chat"), (30, "social")])
def test_zendesk_via_channel_by_name_or_number(via, channel):
    payload = load("zendesk_ticket.json")
    payload["ticket"]["via"]["channel"] = via
    assert map_zendesk(payload)["channel"] == channel


def test_servicenow_raw_values_and_references():
    ticket = map_servicenow(load("servicenow_incident.json"))
    assert ticket["ticket_id"] == "INC0000015"
    assert (ticket["priority"], ticket["status"], ticket["channel"]) == ("urgent", "open", "phone")
    assert ticket["agent_id"] == "5137153cc611227c000bbd1bd8cd2007"
    assert (ticket["reassignment_count"], ticket["reopen_count"], ticket["escalation_level"]) == (2, 0, 0)
    assert ticket["sla_due_at"] is None


def test_servicenow_display_values():
    ticket = map_servicenow(load("servicenow_incident_display.json"))
    assert (ticket["priority"], ticket["status"], ticket["channel"]) == ("high", "open", "web")
    assert (ticket["agent_id"], ticket["group"]) == ("Beth Anglin", "Service Desk")
    assert ticket["escalation_level"] == 1


def test_freshdesk_integer_codes():
    ticket = map_freshdesk(load("freshdesk_ticket.json"))
    assert ticket["ticket_id"] == "20"
    assert (ticket["priority"], ticket["status"], ticket["channel"]) == ("low", "open", "web")
    assert ticket["description"] == "Details about the issue..."
    assert ticket["escalation_level"] == 0


@pytest.mark.parametrize(
    ("system", "fixture"),
    [("zendesk", "zendesk_ticket.json"), ("zendesk", "zendesk_event.json"),
     ("servicenow", "servicenow_incident.json"), ("servicenow", "servicenow_incident_display.json"),
     ("freshdesk", "freshdesk_ticket.json")],
)
def test_each_payload_is_scored(client, system, fixture):
    response = client.post(f"/v1/integrations/{system}", json=load(fixture), headers=AUTH)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert 0 <= body["escalation"]["probability"] <= 1
    assert body["action"]["rule"]


def test_payload_scores_like_the_canonical_ticket(client):
    payload = load("freshdesk_ticket.json")
    via_adapter = client.post("/v1/integrations/freshdesk", json=payload, headers=AUTH).get_json()
    canonical = {k: v for k, v in map_freshdesk(payload).items() if v is not None}
    direct = client.post("/v1/score", json=canonical, headers=AUTH).get_json()
    assert via_adapter["escalation"] == direct["escalation"]


@pytest.mark.parametrize(
    ("system", "fixture", "change", "fields"),
    [
        ("zendesk", "zendesk_ticket.json", {"priority": "critical", "via": {"channel": 999}},
         {"ticket.priority", "ticket.via.channel"}),
        ("zendesk", "zendesk_ticket.json", {"id": None, "created_at": None}, {"ticket.id", "ticket.created_at"}),
        ("servicenow", "servicenow_incident.json", {"priority": "9", "state": "Exploded", "number": "", "sys_id": ""},
         {"priority", "state", "number"}),
        ("servicenow", "servicenow_incident.json", {"reassignment_count": "two", "opened_at": ""},
         {"reassignment_count", "opened_at"}),
        ("freshdesk", "freshdesk_ticket.json", {"priority": 7, "status": 1, "source": 42},
         {"priority", "status", "source"}),
    ],
)
def test_unknown_values_and_missing_fields_are_422(client, system, fixture, change, fields):
    payload = load(fixture)
    target = payload.get("ticket") or payload.get("result") or payload
    target.update(change)
    response = client.post(f"/v1/integrations/{system}", json=payload, headers=AUTH)
    assert response.status_code == 422
    assert {d["field"] for d in response.get_json()["details"]} == fields


def test_unknown_integration_is_404(client):
    response = client.post("/v1/integrations/jira", json={}, headers=AUTH)
    assert response.status_code == 404 and response.is_json


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()).decode()


@pytest.fixture()
def signed_client(serving_models_dir):
    from serving import create_app

    return create_app(make_settings(serving_models_dir, zendesk_webhook_secret="whsec")).test_client()


def test_zendesk_signature_is_verified(signed_client):
    body = json.dumps(load("zendesk_event.json")).encode()
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    headers = {**AUTH, "Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": stamp}

    ok = signed_client.post("/v1/integrations/zendesk", data=body,
                            headers={**headers, "X-Zendesk-Webhook-Signature": sign("whsec", stamp, body)})
    assert ok.status_code == 200
    forged = signed_client.post("/v1/integrations/zendesk", data=body,
                                headers={**headers, "X-Zendesk-Webhook-Signature": sign("other", stamp, body)})
    assert forged.status_code == 401 and "does not match" in forged.get_json()["message"]
    unsigned = signed_client.post("/v1/integrations/zendesk", data=body, headers=headers)
    assert unsigned.status_code == 401
    old = (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    replay = signed_client.post(
        "/v1/integrations/zendesk", data=body,
        headers={**headers, "X-Zendesk-Webhook-Signature-Timestamp": old,
                 "X-Zendesk-Webhook-Signature": sign("whsec", old, body)})
    assert replay.status_code == 401 and "replay window" in replay.get_json()["message"]


def test_fixtures_are_not_modified_by_mapping():
    payload = load("servicenow_incident.json")
    before = copy.deepcopy(payload)
    map_servicenow(payload)
    assert payload == before
