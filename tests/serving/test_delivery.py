"""Delivering one alert: the signed webhook (checked the documented way), Slack, Zendesk, ServiceNow
and Freshdesk write-back, retries and timeouts, against real HTTP receivers on loopback."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from features.settings import Settings
from serving.delivery import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    deliver,
    verify_webhook_signature,
)
from serving.destinations import Destination, DestinationError, load_destinations
from tests.serving.receivers import Receiver

SECRET = "webhook-secret-for-tests"
SETTINGS = Settings(alert_webhook_secret=SECRET, zendesk_email="ops@example.com", zendesk_api_token="zd-token",
                    servicenow_username="svc", servicenow_password="sn-pass", freshdesk_api_key="fd-key",
                    mlflow_tracking_uri=None)
ALERT = {
    "alert_id": 7, "key": "a1b2c3", "ticket_id": "4711", "raised_at": "2026-03-02T12:00:00+00:00",
    "trigger": "escalate_now", "probability": 0.62, "band": "high", "escalate_now": True,
    "reasons": [{"feature": "customer_messages", "label": "customer messages", "value": 4, "effect": 0.8,
                 "direction": "raises risk"}],
    "action": {"route_to": "team supervisor", "tier": "supervisor", "escalation_type": "hierarchical",
               "respond_within": 24.0, "rule": "high-risk"},
    "due_at": "2026-03-03T12:00:00+00:00", "model_version": "v1", "group": "billing_team",
}


@pytest.fixture()
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def destination(kind: str, receiver: Receiver, **extra) -> Destination:
    address = {"url": receiver.url + "/hook"} if kind in ("webhook", "slack") else {"base_url": receiver.url}
    return Destination(name=f"{kind}-test", type=kind, **address, **extra)


def basic_auth(request) -> str:
    return base64.b64decode(request.headers["Authorization"].split()[1]).decode()


def test_webhook_is_signed_and_verifies_with_the_documented_check(receiver):
    result = deliver(destination("webhook", receiver), ALERT, SETTINGS, requests.Session())
    assert result.ok and result.attempts == 1
    got = receiver.requests[0]
    headers = got.headers
    assert verify_webhook_signature(SECRET, got.body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]) is None
    assert headers[IDEMPOTENCY_HEADER] == "a1b2c3:webhook-test"
    body = got.json()
    assert body["ticket_id"] == "4711" and body["action"]["route_to"] == "team supervisor"
    assert body["idempotency_key"] == headers[IDEMPOTENCY_HEADER]
    # the check refuses a changed body, another secret, and an old request
    assert verify_webhook_signature(SECRET, got.body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert verify_webhook_signature("other", got.body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    later = int(headers[TIMESTAMP_HEADER]) + 301
    assert "tolerance" in verify_webhook_signature(SECRET, got.body, headers[TIMESTAMP_HEADER],
                                                   headers[SIGNATURE_HEADER], now=later)
    assert verify_webhook_signature(SECRET, got.body, None, None) == "missing signature or timestamp header"


def test_slack_message(receiver):
    assert deliver(destination("slack", receiver), ALERT, SETTINGS, requests.Session()).ok
    body = receiver.requests[0].json()
    assert "ticket 4711" in body["text"] and body["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "customer messages = 4" in body["text"]


def test_zendesk_write_back_adds_a_tag_and_a_private_comment(receiver):
    assert deliver(destination("zendesk", receiver, tag="risk_alert"), ALERT, SETTINGS, requests.Session()).ok
    got = receiver.requests[0]
    assert (got.method, got.path) == ("PUT", "/api/v2/tickets/4711.json")
    assert basic_auth(got) == "ops@example.com/token:zd-token"
    ticket = got.json()["ticket"]
    assert ticket["additional_tags"] == ["risk_alert"]
    assert ticket["comment"]["public"] is False and "team supervisor" in ticket["comment"]["body"]


def test_servicenow_work_note_looks_up_the_incident_number(receiver):
    sys_id = "9d385017c611228701d22104cc95c371"

    def respond(request):
        if request.method == "GET":
            return 200, {"result": [{"sys_id": sys_id}]}, {}
        return 200, {"result": {"sys_id": sys_id}}, {}

    receiver.respond = respond
    alert = {**ALERT, "ticket_id": "INC0010002"}
    assert deliver(destination("servicenow", receiver), alert, SETTINGS, requests.Session()).ok
    lookup, patch = receiver.requests
    assert lookup.path.startswith("/api/now/table/incident?") and "number%3DINC0010002" in lookup.path
    assert (patch.method, patch.path) == ("PATCH", f"/api/now/table/incident/{sys_id}")
    assert "Escalation risk alert #7" in patch.json()["work_notes"]
    assert basic_auth(patch) == "svc:sn-pass"


def test_servicenow_unknown_incident_is_a_permanent_failure(receiver):
    receiver.respond = lambda request: (200, {"result": []}, {})
    result = deliver(destination("servicenow", receiver), {**ALERT, "ticket_id": "INC404"}, SETTINGS,
                     requests.Session())
    assert not result.ok and result.permanent and result.attempts == 1


def test_freshdesk_private_note(receiver):
    assert deliver(destination("freshdesk", receiver), ALERT, SETTINGS, requests.Session()).ok
    got = receiver.requests[0]
    assert (got.method, got.path) == ("POST", "/api/v2/tickets/4711/notes")
    assert got.json()["private"] is True and basic_auth(got) == "fd-key:X"


def test_transient_failures_are_retried_with_the_same_key(receiver):
    answers = iter([(503, {}, {}), (429, {}, {"Retry-After": "2"}), (200, {}, {})])
    receiver.respond = lambda request: next(answers)
    waits = []
    result = deliver(destination("webhook", receiver, retry={"attempts": 3, "initial_seconds": 0.5}),
                     ALERT, SETTINGS, requests.Session(), sleep=waits.append)
    assert result.ok and result.attempts == 3
    assert waits == [0.5, 2.0]  # exponential first, then the destination's Retry-After
    assert {r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests} == {"a1b2c3:webhook-test"}


def test_a_client_error_is_not_retried(receiver):
    receiver.respond = lambda request: (404, {"error": "RecordNotFound"}, {})
    result = deliver(destination("zendesk", receiver), ALERT, SETTINGS, requests.Session(), sleep=lambda s: None)
    assert (result.ok, result.permanent, result.attempts, result.error) == (False, True, 1, "HTTP 404")


def test_a_slow_destination_times_out(receiver):
    def respond(request):
        time.sleep(0.5)
        return 200, {}, {}

    receiver.respond = respond
    result = deliver(destination("webhook", receiver, timeout_seconds=0.1, retry={"attempts": 2}), ALERT, SETTINGS,
                     requests.Session(), sleep=lambda s: None)
    assert not result.ok and not result.permanent and result.attempts == 2
    assert result.error == "timed out after 0.1 s"


def test_destinations_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "destinations.yaml"
    path.write_text("version: 1\ndestinations:\n  - name: hook\n    type: webhook\n    url: https://h.example/x\n"
                    "  - name: desk\n    type: zendesk\n    timeout_seconds: 0\n")
    with pytest.raises(DestinationError) as info:
        load_destinations(path, SETTINGS)
    message = str(info.value)
    assert str(path) in message and "line 8: destinations.1.timeout_seconds" in message
    path.write_text("destinations:\n  - name: desk\n    type: zendesk\n")
    with pytest.raises(DestinationError, match="line 2: destinations.0: Value error, a zendesk destination needs base_url"):
        load_destinations(path, SETTINGS)
    path.write_text("destinations:\n  - name: desk\n    type: zendesk\n    base_url: https://x.zendesk.com\n")
    with pytest.raises(DestinationError, match="ESCALATION_RISK_ZENDESK_EMAIL"):
        load_destinations(path, Settings(mlflow_tracking_uri=None))
    assert load_destinations(path, SETTINGS).destinations[0].base_url is not None


def test_shipped_destinations_file_is_valid():
    assert load_destinations(Settings().resolved_destinations_path, Settings()).destinations == []
