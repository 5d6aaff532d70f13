"""The hot path in the worst case: huge and hostile texts, out-of-range numbers, made-up methods."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from features.text import TextFeatures
from serving.app import close_app
from serving.metrics import METHODS
from tests.serving.conftest import AUTH, make_settings

MEGABYTE = 1 << 20


@pytest.fixture()
def big_client(serving_models_dir):
    """The service with a 4 MB body limit (the default), so a 1 MB description is allowed in."""
    from serving import create_app

    app = create_app(make_settings(serving_models_dir, max_body_bytes=4 * MEGABYTE))
    yield app.test_client()
    close_app(app)


@pytest.mark.parametrize("kind", ["words", "digits", "emoji"])
def test_a_megabyte_description_is_read_up_to_the_cap(big_client, wire_tickets, monkeypatch, kind):
    """Only max_field_chars of each field reach the text features; the rest is ignored and the answer says so."""
    unit = {"words": "this is unacceptable but thanks 12th time ", "digits": "1234567890", "emoji": "😡😀 "}[kind]
    n_chars = MEGABYTE if kind != "emoji" else MEGABYTE * 3 // 9  # 1 MB of UTF-8 either way
    description = (unit * (n_chars // len(unit) + 1))[:n_chars]
    seen: list[int] = []
    original = TextFeatures.score_part  # every text reaches the features through it (features.online)

    def counting(self, text):
        seen.append(len(text))
        return original(self, text)

    monkeypatch.setattr(TextFeatures, "score_part", counting)
    ticket = {**wire_tickets[0], "description": description, "last_customer_message": "Still waiting!"}
    headers = {**AUTH, "Content-Type": "application/json"}
    response = big_client.post("/v1/score", data=json.dumps(ticket, ensure_ascii=False).encode(), headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    limit = 10_000
    assert body["warnings"] == [{"field": "description", "value": n_chars,
                                 "message": f"only the first {limit} of its {n_chars} characters were read"}]
    assert seen, "the text features were computed"
    subject = len(ticket.get("subject") or "")
    assert max(seen) <= min(subject, limit) + 2 + limit, "more text than the cap was read"

    clipped = big_client.post("/v1/score", json={**ticket, "description": description[:limit]}, headers=AUTH)
    assert clipped.status_code == 200
    assert clipped.get_json()["escalation"] == body["escalation"], "the ignored rest changed the score"
    assert clipped.get_json()["warnings"] == []


@pytest.mark.parametrize("value", [
    int("1" + "0" * 399),           # a 400-digit number
    "1" + "0" * 309,                # the same as text
    10 ** 7,                        # beyond the counter maximum
    True, False,                    # booleans are not counts
])
@pytest.mark.parametrize("field", ["reassignment_count", "customer_messages", "escalation_level"])
def test_out_of_range_and_boolean_counters_are_422_naming_the_field(client, wire_tickets, field, value):
    body = json.dumps({**wire_tickets[0], field: value})
    response = client.post("/v1/score", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    fields = [d["field"] for d in response.get_json()["details"]]
    assert fields == [field]


def test_long_numeric_ids_stay_exact_strings(client, wire_tickets):
    for ticket_id in (2**64, 2**64 + 1, 10**30 + 7, -(2**63) - 1):
        body = json.dumps({**wire_tickets[0], "ticket_id": ticket_id})
        response = client.post("/v1/score", data=body, headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 200
        assert response.get_json()["ticket_id"] == str(ticket_id)


def test_long_digits_do_not_open_a_way_around_strict_json(client, wire_tickets):
    """The exact-integer parser refuses what orjson refuses: NaN, unpaired surrogates, bad UTF-8."""
    long_id = '"ticket_id": 123456789012345678901234'
    base = json.dumps({k: v for k, v in wire_tickets[0].items() if k != "ticket_id"})[:-1]
    for tail in (b', "reopen_count": NaN}', b', "subject": "\\ud800"}', b', "subject": "\xff"}'):
        data = (base + ", " + long_id).encode() + tail
        response = client.post("/v1/score", data=data, headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 400, tail


def label_sets(exposition: str) -> set[str]:
    return {line.split(" ")[0] for line in exposition.splitlines()
            if line.startswith("escalation_risk_request") and not line.startswith("#")}


def test_made_up_methods_and_paths_leave_metrics_labels_unchanged(client):
    """Unknown methods and unmatched paths count under one "other" label each."""
    client.open("/v1/score", method="BREW")
    client.open("/no/such/path", method="BREW")
    client.get("/no/such/path")
    client.get("/metrics")  # a request is counted after its answer: /metrics's own labels exist from the 2nd read
    before = label_sets(client.get("/metrics").get_data(as_text=True))
    rng = random.Random(5)
    for i in range(10_000):
        method = "GET"
        while method in METHODS:  # made up: never one of HTTP's own
            method = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(3, 12)))
        client.open(f"/made/up/{i}" if i % 2 else "/v1/score", method=method)
    after = label_sets(client.get("/metrics").get_data(as_text=True))
    assert after == before
    assert any('method="other"' in s for s in after) and any('endpoint="other"' in s for s in after)
    methods = {m for s in after for m in re.findall(r'method="([^"]*)"', s)}
    assert methods <= {"GET", "POST", "other"}, methods


def test_big_batches_keep_exact_parity_with_clipped_texts(big_client, wire_tickets):
    """Long texts in a batch are clipped the same way as one by one (the batch path shares the cap)."""
    tickets = [{**t, "description": ((t.get("description") or "x") + " ") * 400} for t in wire_tickets[:5]]
    assert all(len(t["description"]) > 10_000 for t in tickets)
    batch = big_client.post("/v1/score", json={"tickets": tickets}, headers=AUTH).get_json()["scores"]
    singles = [big_client.post("/v1/score", json=t, headers=AUTH).get_json() for t in tickets]
    np.testing.assert_array_equal([s["escalation"]["probability"] for s in batch],
                                  [s["escalation"]["probability"] for s in singles])
    assert all(s["warnings"] for s in batch)
