"""Hostile and odd request bodies: each gets a JSON answer (2xx, or a 4xx naming the problem), never a 500."""

from __future__ import annotations

import contextlib
import http.client
import json

import orjson
import pytest

from serving.app import close_app
from tests.reliability.conftest import AUTH
from tests.serving.conftest import make_settings

SECRET_TEXT = "zq-private-complaint-7731"


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_cases(ticket: dict) -> list[tuple[str, bytes, str, set[int]]]:
    """(name, body, content type, acceptable statuses)."""
    as_json = lambda body: json.dumps(body).encode()  # noqa: E731
    t = dict(ticket)
    nulls = dict.fromkeys(t)
    unknown = {**t, "category": "quantum-entanglement", "subcategory": "??", "channel": "carrier-pigeon",
               "customer_tier": "platinum-plus", "group": "team-that-does-not-exist", "agent_id": "A-new"}
    mixed = {**t, "subject": "Réclamation 🚨🔥 срочно 紧急 عاجل ‼️ \u200b\u202e", "description": "😡" * 2000 + " עברית"}
    return [
        ("not JSON", b"hello there", "application/json", {400}),
        ("invalid UTF-8", b'{"ticket_id": "\xff\xfe"}', "application/json", {400}),
        ("empty body", b"", "application/json", {400}),
        ("whitespace body", b"   \n", "application/json", {400}),
        ("wrong content type", as_json(t), "text/plain", {415}),
        ("form encoded", b"ticket_id=1&created_at=2025", "application/x-www-form-urlencoded", {415}),
        ("no content type", as_json(t), "", {415}),
        ("top-level list", as_json([t]), "application/json", {422}),
        ("top-level string", b'"ticket"', "application/json", {422}),
        ("top-level number", b"42", "application/json", {422}),
        ("top-level null", b"null", "application/json", {422}),
        ("NaN literal", as_json(t)[:-1] + b', "reopen_count": NaN}', "application/json", {400}),
        ("Infinity literal", as_json(t)[:-1] + b', "customer_messages": Infinity}', "application/json", {400}),
        ("integer beyond 64 bits", as_json({**t, "reopen_count": 10**30}), "application/json", {422}),
        ("400-digit counter", as_json({**t, "reassignment_count": 10**399}), "application/json", {422}),
        ("boolean counter", as_json({**t, "reopen_count": True}), "application/json", {422}),
        ("nulls everywhere", as_json(nulls), "application/json", {422}),
        ("empty object", b"{}", "application/json", {422}),
        ("deeply nested body", nested(20_000), "application/json", {400, 422}),
        ("deeply nested field", as_json({**t, "subject": json.loads(nested(500))}), "application/json", {422}),
        ("emoji and mixed scripts", as_json(mixed), "application/json", {200}),
        ("NUL and control characters", as_json({**t, "subject": "a\x00b\x07c\x1b[31m"}), "application/json", {200}),
        ("duplicate keys", as_json(t)[:-1] + b', "ticket_id": "dup-last"}', "application/json", {200}),
        ("time in year 1", as_json({**t, "created_at": "0001-01-01T00:00:00+01:00"}), "application/json", {422}),
        ("time in year 9999", as_json({**t, "event_time": "9999-12-31T23:59:59-01:00"}), "application/json", {422}),
        ("time in 2150", as_json({**t, "event_time": "2150-01-01T00:00:00Z", "sla_due_at": "2150-01-02T00:00:00Z"}),
         "application/json", {200}),
        ("epoch zero", as_json({**t, "created_at": "1970-01-01T00:00:00Z"}), "application/json", {422}),
        ("unparseable time", as_json({**t, "created_at": "next tuesday"}), "application/json", {422}),
        ("update before creation", as_json({**t, "event_time": "2000-01-01T00:00:00Z"}), "application/json", {422}),
        ("unknown categories", as_json(unknown), "application/json", {200}),
        ("unknown priority", as_json({**t, "priority": "apocalyptic"}), "application/json", {422}),
        ("negative counter", as_json({**t, "reassignment_count": -3}), "application/json", {422}),
        ("counter as text", as_json({**t, "customer_messages": "many"}), "application/json", {422}),
        ("boolean ticket id", as_json({**t, "ticket_id": True}), "application/json", {422}),
        ("empty ticket id", as_json({**t, "ticket_id": "  "}), "application/json", {422}),
        ("object as ticket id", as_json({**t, "ticket_id": {"id": 1}}), "application/json", {422}),
        ("huge counter", as_json({**t, "customer_messages": 2**62}), "application/json", {422}),
        ("largest counter", as_json({**t, "customer_messages": 1_000_000}), "application/json", {200}),
        ("tickets not a list", as_json({"tickets": t}), "application/json", {422}),
        ("empty batch", as_json({"tickets": []}), "application/json", {422}),
        ("batch over the limit", as_json({"tickets": [t] * 51}), "application/json", {422}),
        # the good tickets of a batch are scored; the bad one is named in `errors` (issue 16)
        ("batch with one bad ticket", as_json({"tickets": [t, {**t, "created_at": None}, t]}), "application/json", {200}),
        ("batch of non-objects", as_json({"tickets": [1, "x", None]}), "application/json", {422}),
        ("secret text with a bad field", as_json({**t, "subject": SECRET_TEXT, "description": SECRET_TEXT,
                                                  "created_at": "garbage"}), "application/json", {422}),
    ]


def test_hostile_bodies_get_json_answers_naming_the_problem(client, wire_tickets):
    cases = hostile_cases(wire_tickets[0])
    seen = []
    for name, body, content_type, expected in cases:
        headers = dict(AUTH)
        response = client.post("/v1/score", data=body, headers=headers, content_type=content_type or None)
        assert response.status_code in expected, (name, response.status_code, response.get_data(as_text=True)[:300])
        assert response.mimetype == "application/json", name
        payload = orjson.loads(response.get_data())
        if response.status_code >= 400:
            assert payload["error"] and payload["message"], name
            text = response.get_data(as_text=True)
            assert "Traceback" not in text and "/work/" not in text and SECRET_TEXT not in text, name
        seen.append(name)
    assert len(seen) == len(cases) >= 40


def test_batch_with_one_bad_ticket_names_it_and_strict_refuses_all(client, wire_tickets):
    t = wire_tickets[0]
    body = {"tickets": [t, {**t, "created_at": None}, t]}
    partial = client.post("/v1/score", json=body, headers=AUTH)
    assert partial.status_code == 200
    payload = partial.get_json()
    assert len(payload["results"]) == 2
    assert [(e["index"], e["field"]) for e in payload["errors"]] == [(1, "tickets.1.created_at")] or \
        [e["index"] for e in payload["errors"]] == [1], payload["errors"]
    strict = client.post("/v1/score?strict=true", json=body, headers=AUTH)
    assert strict.status_code == 422 and strict.get_json()["error"]


def test_odd_but_valid_tickets_score_as_expected(client, wire_tickets):
    t = wire_tickets[0]
    response = client.post("/v1/score", data=json.dumps(t)[:-1] + ', "ticket_id": "dup-last"}', headers=AUTH,
                           content_type="application/json")
    assert response.get_json()["ticket_id"] == "dup-last"  # duplicate keys: the last one wins, as in orjson
    response = client.post("/v1/score", json={**t, "subject": "🚨 срочно 紧急"}, headers=AUTH)
    assert 0 <= response.get_json()["escalation"]["probability"] <= 1
    response = client.post("/v1/score", json={"tickets": [t] * 50}, headers=AUTH)
    assert response.status_code == 200 and len(response.get_json()["scores"]) == 50
    body = client.post("/v1/score?strict=true", json={"tickets": [t, {**t, "created_at": None}]}, headers=AUTH).get_json()
    assert [d["field"] for d in body["details"]] == ["tickets.1.created_at"]
    body = client.post("/v1/score", json={"tickets": [t] * 51}, headers=AUTH).get_json()
    assert body["error"] == "batch_too_large"


def test_one_megabyte_subject_scores_when_the_limit_allows_it(serving_models_dir, wire_tickets):
    from serving import create_app

    app = create_app(make_settings(serving_models_dir, max_body_bytes=4 * 1024 * 1024))
    try:
        ticket = {**wire_tickets[1], "subject": "refund " * 150_000, "description": "x" * 1_000_000}
        response = app.test_client().post("/v1/score", json=ticket, headers=AUTH)
        assert response.status_code == 200
        assert response.get_json()["ticket_id"] == str(wire_tickets[1]["ticket_id"])
    finally:
        close_app(app)


def test_over_the_size_limit_is_a_json_413_in_the_app(client, wire_tickets):
    response = client.post("/v1/score", json={**wire_tickets[0], "subject": "x" * 1_000_000}, headers=AUTH)
    assert response.status_code == 413 and response.get_json()["error"] == "request_entity_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_over_the_size_limit_is_a_json_413_under_gunicorn(shared_service, wire_tickets, chunked):
    body = json.dumps({**wire_tickets[0], "subject": "x" * 1_000_000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", shared_service.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/score")
        for key, value in {**AUTH, "Content-Type": "application/json"}.items():
            conn.putheader(key, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            pieces = [body[start:start + 65536] for start in range(0, len(body), 65536)]
            # The server may answer early and close at any piece, the last one included: the answer
            # is still readable.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for piece in pieces:
                    conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                conn.send(b"0\r\n\r\n")
        else:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(body)
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read())["error"] == "request_entity_too_large"
    finally:
        conn.close()


def test_hostile_bodies_over_real_http(shared_service, wire_tickets):
    """The same cases through gunicorn: answers are JSON and the service keeps serving."""
    for name, body, content_type, expected in hostile_cases(wire_tickets[0]):
        status, payload, headers = shared_service.call("POST", "/v1/score", data=body, headers=AUTH,
                                                       content_type=content_type)
        assert status in expected, (name, status, payload)
        assert headers["Content-Type"] == "application/json", name
    assert shared_service.call("GET", "/readyz")[0] == 200
    assert shared_service.process.poll() is None
