"""Keys, webhook signatures, what error bodies and logs may show, and no debug mode."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import serving.auth
from serving.app import close_app
from serving.auth import key_matches
from tests.reliability.conftest import ADMIN, API_KEY, AUTH
from tests.reliability.harness import BIN, ROOT, free_port
from tests.serving.conftest import make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "serving" / "fixtures"
SECRET = "zendesk-webhook-secret"
TICKET_TEXT = "my-very-private-ticket-text-5531"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {API_KEY[:-1]}"},            # one character short
    {"Authorization": f"Bearer {API_KEY}x"},                 # one character long
    {"Authorization": f"Bearer {API_KEY[:-1]}Y"},            # last character wrong
    {"Authorization": f"Bearer {API_KEY.upper()}"},          # wrong case
    {"Authorization": f"Basic {API_KEY}"},                   # wrong scheme
    {"Authorization": API_KEY},                              # no scheme
    {"X-API-Key": API_KEY[:-1]},
    {"X-API-Key": f"{API_KEY},{API_KEY}"},
    {"X-API-Key": ""},
], ids=lambda h: repr(h)[:40])
def test_missing_wrong_and_almost_right_keys_get_401(client, wire_tickets, headers):
    for path, body in (("/v1/score", wire_tickets[0]), ("/v1/integrations/freshdesk", {"id": 1})):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
    assert client.get("/v1/model", headers=headers).status_code == 401


def test_right_key_by_either_header_is_accepted(client, wire_tickets):
    assert client.post("/v1/score", json=wire_tickets[0], headers=AUTH).status_code == 200
    assert client.post("/v1/score", json=wire_tickets[0], headers={"X-API-Key": API_KEY}).status_code == 200


def test_admin_reload_needs_the_admin_key_not_an_api_key(client):
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    """hmac.compare_digest on every configured key, whether the first, the last or none matches."""
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(serving.auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    keys = ["k1-aaaaaaaa", "k2-bbbbbbbb", "k3-cccccccc"]
    for presented, expected in (("k1-aaaaaaaa", True), ("k3-cccccccc", True), ("k2-bbbbbbbX", False)):
        calls.clear()
        assert key_matches(presented, keys) is expected
        assert len(calls) == len(keys)


def signed(body: bytes, timestamp: str, secret: str = SECRET) -> dict:
    signature = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest())
    return {**AUTH, "Content-Type": "application/json", "X-Zendesk-Webhook-Signature": signature.decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp}


@pytest.fixture()
def zendesk_client(serving_models_dir):
    from serving import create_app

    app = create_app(make_settings(serving_models_dir, zendesk_webhook_secret=SECRET))
    yield app.test_client()
    close_app(app)


def test_zendesk_retry_after_a_failed_delivery_is_accepted(zendesk_client):
    """Zendesk retries a failed delivery with the same signature: only a 200 uses a signature up."""
    body = (FIXTURES / "zendesk_event.json").read_bytes()
    headers = signed(body, datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    holder = zendesk_client.application.extensions["model"]
    live, holder.live = holder.live, None  # as while no verified model is loaded
    try:
        assert zendesk_client.post("/v1/integrations/zendesk", data=body, headers=headers).status_code == 503
    finally:
        holder.live = live
    assert zendesk_client.post("/v1/integrations/zendesk", data=body, headers=headers).status_code == 200
    replay = zendesk_client.post("/v1/integrations/zendesk", data=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.get_json()["message"]


def test_zendesk_signatures_bad_stale_and_replayed_get_401(zendesk_client):
    body = (FIXTURES / "zendesk_event.json").read_bytes()
    now = datetime.now(UTC)
    fresh = now.isoformat().replace("+00:00", "Z")
    stale = (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    future = (now + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    post = lambda headers, data=body: zendesk_client.post("/v1/integrations/zendesk", data=data, headers=headers)  # noqa: E731

    assert post(signed(body, fresh)).status_code == 200
    replay = post(signed(body, fresh))
    assert replay.status_code == 401 and "replayed" in replay.get_json()["message"]
    for headers, why in (
        (signed(body, stale), "replay window"),
        (signed(body, future), "replay window"),
        (signed(body, fresh, secret="another-secret"), "does not match"),
        ({**signed(body, fresh), "X-Zendesk-Webhook-Signature": "AAAA"}, "does not match"),
        ({**AUTH, "Content-Type": "application/json"}, "missing"),
        ({**signed(body, fresh), "X-Zendesk-Webhook-Signature-Timestamp": "not-a-time"}, "does not match"),
    ):
        response = post(headers)
        assert response.status_code == 401, why
        assert why in response.get_json()["message"]
    later = (now + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    tampered = body.replace(b"{", b"{ ", 1)  # signed body, one space added on the way
    response = post(signed(body, later), data=tampered)
    assert response.status_code == 401 and "does not match" in response.get_json()["message"]


def test_error_bodies_show_no_stack_trace_path_or_ticket_text(app, wire_tickets):
    client = app.test_client()
    ticket = {**wire_tickets[0], "subject": TICKET_TEXT, "description": TICKET_TEXT}
    holder = app.extensions["model"]
    live = holder.live
    # Inject a fault inside scoring: the feature state disappears, as after a corrupted in-memory swap.
    object.__setattr__(live, "online", None)
    try:
        response = client.post("/v1/score", json=ticket, headers=AUTH)
    finally:
        holder.reload()
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert response.get_json()["error"] == "internal_error"
    for leak in ("Traceback", "File \"", "/work/", ".py", TICKET_TEXT, "NoneType"):
        assert leak not in text
    bad = client.post("/v1/score", json={**ticket, "created_at": "garbage", "priority": TICKET_TEXT[:5]}, headers=AUTH)
    assert bad.status_code == 422 and TICKET_TEXT not in bad.get_data(as_text=True)


def test_logs_hold_no_api_key_or_ticket_text(shared_service, wire_tickets):
    ticket = {**wire_tickets[0], "subject": TICKET_TEXT, "description": TICKET_TEXT,
              "last_customer_message": TICKET_TEXT}
    wrong_key = "wrong-key-that-must-not-be-logged-99"
    shared_service.call("POST", "/v1/score", ticket, AUTH)
    shared_service.call("POST", "/v1/score", ticket, {"Authorization": f"Bearer {wrong_key}"})
    shared_service.call("POST", "/v1/score", {**ticket, "created_at": "garbage"}, AUTH)
    shared_service.call("POST", "/v1/score", data=json.dumps(ticket).encode()[:-5], headers=AUTH)
    shared_service.call("POST", "/v1/admin/reload", headers={"Authorization": f"Bearer {wrong_key}"})
    log = shared_service.log()
    logged_paths = [json.loads(line).get("path") for line in log.splitlines() if line.startswith("{")]
    assert "/v1/score" in logged_paths  # the requests were logged ...
    for secret in (API_KEY, wrong_key, TICKET_TEXT, "test-admin-key"):
        assert secret not in log  # ... without keys or ticket text


def test_debug_mode_cannot_be_switched_on(serving_models_dir, monkeypatch, tmp_path):
    from serving import create_app

    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.setenv("ESCALATION_RISK_DEBUG", "1")
    app = create_app(make_settings(serving_models_dir))
    close_app(app)
    assert app.debug is False and app.config["DEBUG"] is False
    config = (ROOT / "serving" / "gunicorn.conf.py").read_text()
    assert "reload = True" not in config and "debug" not in config.replace("never debug", "")
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "--reload", "--bind", f"127.0.0.1:{free_port()}",
         "serving.app:create_served_app()"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": str(BIN), "ESCALATION_RISK_MODELS_DIR": str(serving_models_dir)},
    )
    assert result.returncode != 0
    assert "--reload is a development switch" in result.stdout + result.stderr
