"""Zendesk, ServiceNow and Freshdesk payloads in the shapes they send (fixtures written from each
vendor's documentation: tests/serving/fixtures/shapes.json lists them with their settings)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from features.settings import Settings
from serving.adapters import PayloadError, adapt_payload, event_to_ticket
from serving.app import close_app
from tests.serving.conftest import AUTH, make_settings

FIXTURES = Path(__file__).parent / "fixtures"
SHAPES = json.loads((FIXTURES / "shapes.json").read_text())["shapes"]
SCORE_FIELDS = {"ticket_id", "escalation", "priority", "action", "model", "scored_at", "warnings"}
BERLIN = {"servicenow_date_formats": ["dd/MM/yyyy HH:mm:ss"], "servicenow_time_zone": "Europe/Berlin"}
REFERENCES = ("customer_id", "agent_id", "group")


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def adapt(system: str, body: dict, headers: dict | None = None, **settings) -> list[dict]:
    return adapt_payload(system, body, headers or {}, Settings(**settings)).events


@pytest.fixture(scope="module")
def clients(serving_models_dir):
    """A test client per settings variant (created once each); stateless unless `state="on"` (each such
    client then has a store of its own)."""
    from serving import create_app

    made: dict[str, object] = {}

    def get(**overrides):
        overrides = {"state": "off", **overrides}
        key = json.dumps(overrides, sort_keys=True, default=str)
        if key not in made:
            app = create_app(make_settings(serving_models_dir, **overrides))
            app.config.update(TESTING=True)
            made[key] = app
        return made[key].test_client()

    yield get
    for app in made.values():
        close_app(app)


def post(client, system: str, body: dict):
    return client.post(f"/v1/integrations/{system}", json=body, headers=AUTH)


def assert_full_score(body: dict) -> None:
    assert set(body) >= SCORE_FIELDS, body
    assert 0 <= body["escalation"]["probability"] <= 1
    assert body["escalation"]["band"] in ("low", "medium", "high")
    assert len(body["escalation"]["reasons"]) == 3
    assert body["priority"]["predicted"] in body["priority"]["probabilities"]
    assert body["action"]["rule"] and body["model"]["version"]


@pytest.mark.parametrize("shape", SHAPES, ids=[s["file"] for s in SHAPES])
def test_every_documented_shape_is_answered(clients, shape):
    """Each fixture scores with 200 and a full response, or (a partial event without a creation
    time) gets a 422 naming the vendor field the creation time would come from."""
    response = post(clients(**shape.get("settings", {})), shape["system"], load(shape["file"]))
    body = response.get_json()
    if not shape["scored"]:
        assert response.status_code == 422 and body["error"] == "partial_event", body
        assert body["details"][0]["field"] in ("opened_at", "freshdesk_webhook.ticket_created_on")
        return
    assert response.status_code == 200, body
    for result in body.get("results", [body]):
        assert_full_score(result)


# --- Zendesk ---------------------------------------------------------------------------------
def test_zendesk_ticket_object_maps_to_the_canonical_ticket():
    [ticket] = adapt("zendesk", load("zendesk_ticket.json"))
    assert ticket["ticket_id"] == "35436"
    assert (ticket["channel"], ticket["priority"], ticket["status"]) == ("web", "high", "open")
    assert (ticket["customer_id"], ticket["agent_id"], ticket["group"]) == ("20978392", "235323", "98738")
    assert (ticket["customer_tier"], ticket["category"]) == ("vip", "billing")
    assert (ticket["created_at"], ticket["event_time"]) == ("2025-07-20T22:55:29+00:00", "2025-07-21T10:05:11+00:00")
    assert "partial" not in ticket, "a ticket object is a full ticket"


def test_zendesk_bare_object_and_trigger_placeholders():
    [bare] = adapt("zendesk", load("zendesk_ticket_bare.json"))
    assert (bare["ticket_id"], bare["channel"], bare["status"], bare["customer_tier"]) == ("35437", "email", "pending",
                                                                                          "gold")
    headers = {"X-Zendesk-Webhook-Invocation-Id": "01HZX4Q9"}
    [trigger] = adapt("zendesk", load("zendesk_trigger_placeholders.json"), headers)
    # {{ticket.status}} "Open", {{ticket.via}} "Web Form", {{ticket.tags}} "billing vip", minutes-only times
    assert (trigger["status"], trigger["priority"], trigger["channel"]) == ("open", "high", "web")
    assert trigger["customer_tier"] == "vip" and "agent_id" not in trigger
    assert trigger["created_at"] == "2025-07-25T07:05:00+00:00"
    assert trigger["source_event_id"] == "01HZX4Q9"


def test_zendesk_event_webhooks_are_partial_events():
    created = adapt("zendesk", load("zendesk_event_created.json"))[0]
    assert created["partial"] is True and created["event_type"] == "created"
    assert created["source_event_id"] == "6f1c2a3b-9d8e-4f70-a1b2-c3d4e5f60718"
    assert created["event_time"] == "2025-01-08T10:12:07.511022+00:00"

    customer = adapt("zendesk", load("zendesk_event_comment_customer.json"))[0]
    assert customer["customer_message"].startswith("This is the third time")
    assert "agent_message" not in customer and customer["event_type"] == "customer_reply"
    assert event_to_ticket(customer)["last_customer_message"] == customer["customer_message"]
    assert {"partial", "source_event_id", "customer_message"}.isdisjoint(event_to_ticket(customer))

    agent = adapt("zendesk", load("zendesk_event_comment_agent.json"))[0]
    assert agent["agent_message"].startswith("We are investigating") and "customer_message" not in agent

    private = load("zendesk_event_comment_customer.json")
    private["event"]["comment"]["is_public"] = False
    internal = adapt("zendesk", private)[0]
    assert "customer_message" not in internal and "agent_message" not in internal, "an internal note is no message"

    solved = adapt("zendesk", load("zendesk_event_status_changed.json"))[0]
    assert (solved["status"], solved["event_type"]) == ("resolved", "resolved")
    reopened = load("zendesk_event_status_changed.json")
    reopened["event"] = {"current": "OPEN", "previous": "SOLVED"}
    assert adapt("zendesk", reopened)[0]["event_type"] == "reopened"

    assert adapt("zendesk", load("zendesk_event.json"))[0]["priority"] == "low"
    group = adapt("zendesk", load("zendesk_event_group_changed.json"))[0]
    assert (group["group"], group["event_type"]) == ("8447320466499", "reassigned")
    assert adapt("zendesk", load("zendesk_event_assignee_changed.json"))[0]["agent_id"] == "8447388090777"


@pytest.mark.parametrize("is_public, is_staff, expected", [
    ("false", False, None),            # a private note sent with a text flag: no message at all
    ("FALSE", None, None),
    (0, False, None),
    ("true", "false", "customer_message"),  # the customer's public comment, flags as text
    ("1", "true", "agent_message"),
    (True, "no", "customer_message"),
])
def test_zendesk_comment_flags_sent_as_text_are_read_as_meant(is_public, is_staff, expected):
    """Flags arrive as JSON booleans, 0/1 or text from webhook templates; "false" is not true."""
    body = load("zendesk_event_comment_customer.json")
    body["event"]["comment"]["is_public"] = is_public
    if is_staff is None:
        del body["event"]["comment"]["author"]["is_staff"]
    else:
        body["event"]["comment"]["author"]["is_staff"] = is_staff
    [event] = adapt("zendesk", body)
    messages = {key for key in ("customer_message", "agent_message") if key in event}
    assert messages == ({expected} if expected else set()), event


def test_zendesk_comment_flags_and_shapes_it_cannot_read_are_warned_by_field(clients):
    """An unreadable visibility keeps the comment out (a private note never counts as the customer's);
    a comment that is not an object is reported, never silently dropped; no ticket text in warnings."""
    client = clients()
    body = load("zendesk_event_comment_customer.json")
    body["event"]["comment"]["is_public"] = "maybe"
    response = post(client, "zendesk", body)
    assert response.status_code == 200, response.get_json()
    warnings = {w["field"]: w for w in response.get_json()["warnings"]}
    assert "event.comment.is_public" in warnings and "false" in warnings["event.comment.is_public"]["message"]
    assert "customer_message" not in adapt("zendesk", body)[0]

    for change, field in (({"comment": "This is the third time I write"}, "event.comment"),
                          ({"comment": ["This is the third time"]}, "event.comment"),
                          ("This is the third time I write", "event")):
        body = load("zendesk_event_comment_customer.json")
        body["event"] = change
        response = post(client, "zendesk", body)
        assert response.status_code == 200, response.get_json()
        fields = {w["field"]: w["message"] for w in response.get_json()["warnings"]}
        assert field in fields and "not recorded" in fields[field], fields
        assert "third time" not in response.get_data(as_text=True), "ticket text never in a warning"


def test_zendesk_event_without_creation_time_needs_the_store(clients):
    body = load("zendesk_event_comment_customer.json")
    del body["detail"]["created_at"]
    [event] = adapt("zendesk", body)
    assert event["partial"] is True and "created_at" not in event and event["customer_message"]
    response = post(clients(), "zendesk", body)
    assert response.status_code == 422
    detail = response.get_json()["details"][0]
    assert detail["field"] == "detail.created_at" and "stored state" in detail["message"]
    assert "third time" not in response.get_data(as_text=True), "ticket text never in an error body"


def test_event_webhooks_through_the_ticket_store(clients, tmp_path):
    """With the store on, partial events merge into the ticket: the comment without a creation time
    is scored on the stored state, counted as a customer message, and a redelivery is recorded once."""
    client = clients(state="on", project_dir=tmp_path)
    created = post(client, "zendesk", load("zendesk_event_created.json"))
    assert created.status_code == 200, created.get_json()
    comment = load("zendesk_event_comment_customer.json")
    del comment["detail"]["created_at"]
    first = post(client, "zendesk", comment)
    assert first.status_code == 200, first.get_json()
    assert post(client, "zendesk", comment).get_json()["escalation"] == first.get_json()["escalation"]
    ticket = client.get("/v1/tickets/5160", headers=AUTH).get_json()
    assert ticket["state"]["customer_messages"] == 1 and ticket["events"] == 2
    assert ticket["state"]["last_customer_message"].startswith("This is the third time")
    assert ticket["state"]["created_at"].startswith("2025-01-08T10:12:07")
    unseen = post(client, "servicenow", load("servicenow_partial_update.json"))
    assert unseen.status_code == 422
    assert "opened_at" in {d["field"] for d in unseen.get_json()["details"]}, unseen.get_json()


def test_non_ticket_event_is_refused_by_name(clients):
    body = {"type": "zen:event-type:user.active_changed", "detail": {"id": "6596848315901"}, "event": {},
            "id": "2b24ef10-19d4-4740-93cf-8f98ec4776c0", "time": "2099-07-04T05:33:18Z"}
    response = post(clients(), "zendesk", body)
    assert response.status_code == 422 and response.get_json()["details"][0]["field"] == "type"


def test_zendesk_organization_field_and_value_translation_from_a_mapping_file(serving_models_dir, tmp_path):
    from serving import create_app

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("zendesk:\n  fields:\n    category: [{custom_field: 360001234567}]\n"
                       "    customer_tier: [{organization_field: tier}, {tags: [vip, gold]}]\n"
                       "  values:\n    customer_tier: {platinum: vip}\n")
    [ticket] = adapt("zendesk", load("zendesk_ticket_sideloaded.json"), integration_mapping_path=mapping)
    assert (ticket["category"], ticket["customer_tier"]) == ("technical", "vip")
    app = create_app(make_settings(serving_models_dir, integration_mapping_path=mapping))
    try:
        client = app.test_client()
        response = client.post("/v1/integrations/zendesk", json=load("zendesk_ticket_sideloaded.json"), headers=AUTH)
        assert response.status_code == 200 and response.get_json()["warnings"] == []
        direct = client.post("/v1/score", json=event_to_ticket(ticket), headers=AUTH).get_json()
        assert response.get_json()["escalation"] == direct["escalation"]
    finally:
        close_app(app)


def test_bad_mapping_file_stops_the_service_naming_the_field(serving_models_dir, tmp_path):
    from serving import create_app
    from serving.integration_mapping import IntegrationMappingError

    mapping = tmp_path / "bad.yaml"
    mapping.write_text("zendesk:\n  fields:\n    tier: [{tags: [vip]}]\n    category: [{field: type, tags: [x]}]\n")
    with pytest.raises(IntegrationMappingError, match=r"bad.yaml.*zendesk\.fields\.tier") as caught:
        create_app(make_settings(serving_models_dir, integration_mapping_path=mapping), load_model=False)
    assert "zendesk.fields.category.0" in str(caught.value) and "exactly one of" in str(caught.value)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("zendesk_event*.json")))
def test_signed_zendesk_event_webhooks_are_scored(clients, name):
    """Each event webhook as Zendesk delivers it: signed with HMAC-SHA256 over timestamp + body."""
    client = clients(zendesk_webhook_secret="whsec")
    body = json.dumps(load(name)).encode()
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    headers = {**AUTH, "Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": stamp,
               "X-Zendesk-Webhook-Signature": sign("whsec", stamp, body), "X-Zendesk-Webhook-Id": "01HZWEBHOOK"}
    response = client.post("/v1/integrations/zendesk", data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert_full_score(response.get_json())
    again = client.post("/v1/integrations/zendesk", data=body, headers=headers)
    assert again.status_code == 401 and "already used" in again.get_json()["message"]


def test_zendesk_signature_is_verified(clients):
    client = clients(zendesk_webhook_secret="whsec")
    body = json.dumps(load("zendesk_event.json")).encode()
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    headers = {**AUTH, "Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": stamp}
    forged = client.post("/v1/integrations/zendesk", data=body,
                         headers={**headers, "X-Zendesk-Webhook-Signature": sign("other", stamp, body)})
    assert forged.status_code == 401 and "does not match" in forged.get_json()["message"]
    assert client.post("/v1/integrations/zendesk", data=body, headers=headers).status_code == 401
    old = (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    replay = client.post("/v1/integrations/zendesk", data=body,
                         headers={**headers, "X-Zendesk-Webhook-Signature-Timestamp": old,
                                  "X-Zendesk-Webhook-Signature": sign("whsec", old, body)})
    assert replay.status_code == 401 and "replay window" in replay.get_json()["message"]


# --- ServiceNow ------------------------------------------------------------------------------
SAME_INCIDENT = [
    ("servicenow_same_raw.json", {}),
    ("servicenow_same_display_berlin.json", BERLIN),
    ("servicenow_same_display_newyork.json", {"servicenow_date_formats": ["MM-dd-yyyy hh:mm:ss a"],
                                              "servicenow_time_zone": "America/New_York"}),
    ("servicenow_same_pairs.json", BERLIN),
]


def test_one_incident_in_every_servicenow_shape_gives_one_canonical_ticket():
    """Raw codes, display values in two formats and two time zones (across a DST change), and pairs."""
    events = [adapt("servicenow", load(name), **settings)[0] for name, settings in SAME_INCIDENT]
    raw, berlin, new_york, pairs = events
    assert (raw["created_at"], raw["event_time"], raw["sla_due_at"]) == (
        "2025-03-02T23:09:51+00:00", "2025-03-10T14:00:00+00:00", "2025-03-12T23:09:51+00:00")
    assert (raw["status"], raw["priority"], raw["channel"], raw["escalation_level"]) == ("open", "high", "email", 1)
    assert raw["extra"]["impact"] == berlin["extra"]["impact"] == "2 - Medium"

    def without_references(event):
        return {k: v for k, v in event.items() if k not in (*REFERENCES, "extra", "category", "subcategory")}

    assert without_references(raw) == without_references(berlin) == without_references(new_york) == \
        without_references(pairs)
    # Choice labels and codes differ in case only: one value once normalised (features.schema).
    assert (raw["category"], berlin["category"]) == ("billing", "Billing")
    # Pairs: times from `value` (UTC), references in the form the model was trained on.
    assert berlin == new_york == pairs
    by_value = adapt("servicenow", load("servicenow_same_pairs.json"), servicenow_references="value")[0]
    assert {k: by_value[k] for k in REFERENCES} == {k: raw[k] for k in REFERENCES}
    assert by_value["extra"]["location"] == raw["extra"]["location"] == "8226baa4ac1d55eb40eb653c02649519"


def test_one_incident_in_every_servicenow_shape_scores_the_same(clients):
    scores = []
    for name, settings in SAME_INCIDENT:
        response = post(clients(**settings), "servicenow", load(name))
        assert response.status_code == 200, response.get_json()
        scores.append(response.get_json()["escalation"]["probability"])
    assert max(scores) - min(scores) <= 1e-9, scores
    # The same display values read with the wrong time zone are another moment: the setting matters.
    wrong = post(clients(**{**BERLIN, "servicenow_time_zone": "Asia/Tokyo"}), "servicenow",
                 load("servicenow_same_display_berlin.json"))
    assert wrong.status_code == 200
    shifted = adapt("servicenow", load("servicenow_same_display_berlin.json"),
                    **{**BERLIN, "servicenow_time_zone": "Asia/Tokyo"})[0]
    assert shifted["created_at"] == "2025-03-02T15:09:51+00:00"


def test_raw_references_warn_that_the_model_knows_names(clients):
    body = post(clients(), "servicenow", load("servicenow_same_raw.json")).get_json()
    warned = {w["field"]: w for w in body["warnings"]}
    assert {"caller_id", "assigned_to", "assignment_group"} <= set(warned)
    assert "display_value=all" in warned["caller_id"]["message"]
    pairs = post(clients(**BERLIN), "servicenow", load("servicenow_same_pairs.json")).get_json()
    assert not [w for w in pairs["warnings"] if w["field"] in warned]


def test_display_date_in_an_unconfigured_format_names_the_servicenow_field(clients):
    response = post(clients(), "servicenow", load("servicenow_same_display_berlin.json"))
    assert response.status_code == 422
    fields = {d["field"]: d["message"] for d in response.get_json()["details"]}
    assert "opened_at" in fields and "03/03/2025 00:09:51" in fields["opened_at"]
    assert "invalid character" not in json.dumps(fields) and "(canonical)" not in json.dumps(fields)


def test_update_before_creation_names_both_servicenow_fields(clients):
    body = load("servicenow_incident.json")
    body["result"]["sys_updated_on"] = "2025-03-01 08:00:00"
    response = post(clients(), "servicenow", body)
    assert response.status_code == 422
    [detail] = response.get_json()["details"]
    assert detail["field"] == "sys_updated_on" and "opened_at" in detail["message"]


def test_servicenow_partial_record_is_a_partial_event(clients):
    [event] = adapt("servicenow", load("servicenow_partial_update.json"))
    assert event["partial"] is True and "created_at" not in event
    assert (event["status"], event["reassignment_count"], event["event_time"]) == ("on_hold", 2,
                                                                                 "2025-03-10T16:30:00+00:00")
    assert event["source_event_id"] == "9d385017c611228701d22104cc95c371:7"
    response = post(clients(), "servicenow", load("servicenow_partial_update.json"))
    assert response.status_code == 422 and response.get_json()["details"][0]["field"] == "opened_at"
    with_creation = {**load("servicenow_partial_update.json"), "opened_at": "2025-03-02 23:09:51"}
    assert post(clients(), "servicenow", with_creation).status_code == 200, "carries enough: scored"


def test_servicenow_result_list_scores_the_good_records(clients):
    response = post(clients(), "servicenow", load("servicenow_result_list.json"))
    assert response.status_code == 200
    body = response.get_json()
    assert [r["ticket_id"] for r in body["results"]] == ["INC0000060"]
    assert body["errors"] == [{"index": 1, "ticket_id": "INC0000061", "field": "result.1.opened_at",
                               "message": body["errors"][0]["message"]}]
    assert "19-01-2016 04:55" in body["errors"][0]["message"]


def test_missing_number_or_unusable_time_is_422_and_a_bad_counter_a_warning(clients):
    body = load("servicenow_incident.json")
    body["result"].update({"number": "", "sys_id": "", "reassignment_count": "two", "opened_at": "yesterday"})
    response = post(clients(), "servicenow", body)
    assert response.status_code == 422
    assert {d["field"] for d in response.get_json()["details"]} == {"number", "opened_at"}
    counted = post(clients(), "servicenow", servicenow_with(reassignment_count="two"))
    assert counted.status_code == 200
    assert {"field": "reassignment_count", "value": "two", "message": "expected a whole number; scored as 'not set'"} \
        in counted.get_json()["warnings"]


# --- Freshdesk -------------------------------------------------------------------------------
def test_freshdesk_v2_ticket_and_automation_webhooks():
    [v2] = adapt("freshdesk", load("freshdesk_ticket.json"))
    assert (v2["ticket_id"], v2["priority"], v2["status"], v2["channel"]) == ("20", "low", "open", "web")
    assert v2["description"] == "Details about the issue..." and v2["escalation_level"] == 0

    [nested] = adapt("freshdesk", load("freshdesk_webhook_nested.json"))
    # Placeholder labels: "High", "Open", "Email"; tags "billing, gold"; dates as Freshdesk renders them.
    assert (nested["priority"], nested["status"], nested["channel"]) == ("high", "open", "email")
    assert (nested["customer_tier"], nested["category"], nested["group"]) == ("gold", "Billing", "Billing")
    assert (nested["created_at"], nested["event_time"], nested["sla_due_at"]) == (
        "2025-08-24T11:56:51+00:00", "2025-08-24T12:10:00+00:00", "2025-08-27T11:30:00+00:00")
    assert nested["partial"] is True and nested["event_type"] == "created"
    assert nested["description"] == "I was charged twice for my subscription this month."

    [flat] = adapt("freshdesk", load("freshdesk_webhook_flat.json"), freshdesk_time_zone="Asia/Kolkata")
    assert (flat["priority"], flat["status"], flat["channel"]) == ("normal", "pending", "web")
    # "August 24 2025 at 05:26 PM IST", "Sun, 24 Aug, 2025 at  7:40 PM" (helpdesk zone), due 05:00 PM IST
    assert (flat["created_at"], flat["event_time"], flat["sla_due_at"]) == (
        "2025-08-24T11:56:00+00:00", "2025-08-24T14:10:00+00:00", "2025-08-27T11:30:00+00:00")


def test_freshdesk_zone_abbreviation_of_another_zone_is_warned():
    payload = adapt_payload("freshdesk", load("freshdesk_webhook_flat.json"), {}, Settings(freshdesk_time_zone="UTC"))
    [warning] = [w for w in payload.warnings if w["field"] == "ticket_created_on"]
    assert "IST" in warning["message"] and "ESCALATION_RISK_FRESHDESK_TIME_ZONE" in warning["message"]


def test_freshdesk_webhook_without_dates_is_a_partial_event_with_the_receipt_time(clients):
    received = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)
    payload = adapt_payload("freshdesk", load("freshdesk_webhook_status_changed.json"), {}, Settings(),
                            received_at=received)
    [event] = payload.events
    assert event["event_time"] == "2025-09-01T12:00:00+00:00" and event["partial"] is True
    assert any(w["field"] == "freshdesk_webhook.ticket_modified_on" for w in payload.warnings)
    response = post(clients(), "freshdesk", load("freshdesk_webhook_status_changed.json"))
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "freshdesk_webhook.ticket_created_on"


# --- unknown values: 200 with a warning naming the vendor field ------------------------------
def zendesk_with(channel):
    body = load("zendesk_ticket.json")
    body["ticket"]["via"]["channel"] = channel
    return body


def freshdesk_with(**change):
    body = load("freshdesk_ticket.json")
    body.update(change)
    return body


def webhook_with(**change):
    body = load("freshdesk_webhook_nested.json")
    body["freshdesk_webhook"].update(change)
    return body


def servicenow_with(**change):
    body = load("servicenow_incident.json")
    body["result"].update(change)
    return body


UNKNOWN = [
    *(("zendesk", zendesk_with(c), "ticket.via.channel", c) for c in
      ("sms", "any_channel", "mobile_sdk", "mobile", "closed_ticket", "side_conversation", "rule")),
    ("freshdesk", freshdesk_with(status=6), "status", 6),
    ("freshdesk", freshdesk_with(status=7), "status", 7),
    ("freshdesk", freshdesk_with(source=11), "source", 11),
    ("freshdesk", freshdesk_with(source=13), "source", 13),
    ("freshdesk", webhook_with(ticket_status="Waiting on Customer"), "freshdesk_webhook.ticket_status",
     "Waiting on Customer"),
    ("freshdesk", webhook_with(ticket_source="WhatsApp"), "freshdesk_webhook.ticket_source", "WhatsApp"),
    ("servicenow", servicenow_with(state="9", incident_state="9"), "state", "9"),
    ("servicenow", servicenow_with(state="Awaiting Approval"), "state", "Awaiting Approval"),
    *(("servicenow", servicenow_with(contact_type=c), "contact_type", c) for c in ("alert", "monitoring", "integration")),
    ("servicenow", servicenow_with(priority="0"), "priority", "0"),
]


@pytest.mark.parametrize(("system", "body", "field", "value"), UNKNOWN,
                         ids=[f"{s}-{f}-{v}" for s, _, f, v in UNKNOWN])
def test_unknown_values_score_with_a_warning_naming_them(clients, system, body, field, value):
    response = post(clients(), system, body)
    assert response.status_code == 200, response.get_json()
    warnings = response.get_json()["warnings"]
    assert any(w["field"] == field and w["value"] == value for w in warnings), warnings
    assert_full_score(response.get_json())


def test_unknown_priority_is_scored_as_not_set():
    [event] = adapt("servicenow", servicenow_with(priority="0"))
    assert "priority" not in event


def test_placeholder_labels_are_known_values_without_warnings(clients):
    response = post(clients(), "freshdesk", load("freshdesk_webhook_nested.json"))
    assert response.status_code == 200
    assert not [w for w in response.get_json()["warnings"]
                if w["field"].endswith(("ticket_status", "ticket_priority", "ticket_source"))]


def test_payload_scores_like_the_canonical_ticket(clients):
    payload = load("freshdesk_ticket.json")
    client = clients()
    via_adapter = post(client, "freshdesk", payload).get_json()
    [event] = adapt("freshdesk", payload)
    direct = client.post("/v1/score", json=event_to_ticket(event), headers=AUTH).get_json()
    assert via_adapter["escalation"] == direct["escalation"]


def test_model_warnings_name_the_vendor_field(clients):
    """A value the adapter maps but the model never saw (here a category) is named by its vendor field."""
    body = load("zendesk_ticket.json")
    body["ticket"]["custom_fields"] = [{"id": "category", "value": "Quantum Physics"}]
    warnings = post(clients(), "zendesk", body).get_json()["warnings"]
    [category] = [w for w in warnings if w["field"] == "ticket.custom_fields[category]"]
    assert category["value"] == "quantum_physics" and "scored as 'other'" in category["message"]


def test_unknown_integration_is_404(clients):
    response = clients().post("/v1/integrations/jira", json={}, headers=AUTH)
    assert response.status_code == 404 and response.is_json


def test_not_an_object_is_422():
    with pytest.raises(PayloadError):
        adapt_payload("zendesk", ["not", "an", "object"], {}, Settings())


def test_fixtures_are_not_modified_by_mapping():
    for shape in SHAPES:
        payload = load(shape["file"])
        before = copy.deepcopy(payload)
        adapt_payload(shape["system"], payload, {}, Settings(**shape.get("settings", {})))
        assert payload == before, shape["file"]
