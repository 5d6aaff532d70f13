"""One current score per ticket: GET /v1/tickets/{id}, GET /v1/queue and /dashboard show the same latest
score, whether a request or the queue watcher gave it, saying which, with reasons when computed."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from serving.app import close_app
from serving.destinations import Destinations
from serving.live_model import ModelHolder
from serving.policy import load_policy
from serving.store.db import alembic_config, create_store_engine, upgrade_database
from serving.store.tickets import TicketStore
from serving.watcher import Watcher
from tests.serving.conftest import AUTH, make_settings


@pytest.fixture()
def served(tmp_path, serving_models_dir):
    """An app and a watcher on one real SQLite store (the app answers requests, the watcher ticks)."""
    from serving import create_app

    url = f"sqlite:///{tmp_path / 'tickets.db'}"
    settings = make_settings(serving_models_dir, store_url=url, watch_batch_size=50, monitoring_interval_seconds=0)
    app = create_app(settings)
    app.config.update(TESTING=True)
    engine = create_store_engine(url)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    assert holder.reload().ok
    watcher = Watcher(settings, engine, lambda: holder.live, load_policy(settings.resolved_policy_path),
                      Destinations())
    yield app.test_client(), watcher
    watcher.release()
    close_app(app)
    engine.dispose()


def queue_rows(client) -> dict[str, dict]:
    body = client.get("/v1/queue?limit=500", headers=AUTH).get_json()
    return {t["ticket_id"]: t for t in body["tickets"]}


def test_a_ticket_scored_only_by_the_watcher_shows_that_score(served, wire_tickets):
    """Backfilled (events only, as `escalation-risk ingest` writes them), then one tick: the ticket view's
    latest score is the watcher's, equal to the queue's; reasons and features where the tick explained."""
    client, watcher = served
    watcher.tickets.record_events(wire_tickets, "ingest")
    now = max(datetime.fromisoformat(t["event_time"].replace("Z", "+00:00")) for t in wire_tickets) + timedelta(days=2)
    assert watcher.tick(now).alerts_raised > 0
    queue = queue_rows(client)
    kinds = set()
    for ticket_id, row in queue.items():
        view = client.get(f"/v1/tickets/{ticket_id}", headers=AUTH).get_json()
        latest = view["latest_score"]
        assert latest is not None, f"{ticket_id}: scored by the watcher, yet no latest score"
        assert latest["source"] == "watcher" and latest["model"]["version"] == "v1-small"
        assert (latest["escalation"]["probability"], latest["escalation"]["band"]) == (row["probability"], row["band"])
        assert datetime.fromisoformat(latest["scored_at"]) == datetime.fromisoformat(row["scored_at"]) == now
        assert latest["action"]["route_to"], "the watcher's action is kept with its score"
        if latest["reasons_computed"]:
            assert row["band"] == "high" or latest["escalation"]["escalate_now"]
            assert latest["escalation"]["reasons"] and latest["features"], "an alerting ticket keeps its reasons"
            alerts = watcher.alerts.alerts_for_ticket(ticket_id)
            assert alerts and alerts[-1]["probability"] == pytest.approx(row["probability"])
        else:
            assert latest["escalation"]["reasons"] == [] and latest["features"] is None
        kinds.add(latest["reasons_computed"])
    assert kinds == {True, False}, "the fixture should put tickets on both sides of the alert line"


def test_a_newer_watcher_score_replaces_the_request_score_and_a_newer_request_wins_again(served, wire_tickets):
    client, watcher = served
    tickets = [dict(t, ticket_id=f"REQ-{i}") for i, t in enumerate(wire_tickets[:10])]
    answered = {}
    for ticket in tickets:
        response = client.post("/v1/score", json=ticket, headers=AUTH)
        assert response.status_code == 200, response.get_json()
        answered[ticket["ticket_id"]] = response.get_json()
        first = client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=AUTH).get_json()["latest_score"]
        assert first["source"] == "request" and first["reasons_computed"] and first["escalation"]["reasons"]
        assert first["escalation"]["probability"] == response.get_json()["escalation"]["probability"]
        assert first["features"]

    later = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)  # aged three days with no new event
    assert watcher.tick(later).ran
    queue, moved = queue_rows(client), 0
    for ticket_id, request_score in answered.items():
        view = client.get(f"/v1/tickets/{ticket_id}", headers=AUTH).get_json()
        latest, row = view["latest_score"], queue[ticket_id]
        assert latest["source"] == "watcher" and datetime.fromisoformat(latest["scored_at"]) == later
        assert (latest["escalation"]["probability"], latest["escalation"]["band"]) == (row["probability"], row["band"])
        if not latest["reasons_computed"]:
            assert latest["features"] is None, "the request's feature values are not shown with the watcher's score"
        assert [e["kind"] for e in view["timeline"]].count("score") == 1, "the timeline keeps the answered score"
        moved += latest["escalation"]["probability"] != request_score["escalation"]["probability"]
    assert moved, "three days of aging should move some of the ten scores"

    ticket = tickets[0]
    again = client.post("/v1/score", json=dict(ticket, event_time=later.isoformat(),
                                                customer_messages=(ticket.get("customer_messages") or 0) + 1),
                        headers=AUTH)
    assert again.status_code == 200, again.get_json()
    latest = client.get("/v1/tickets/REQ-0", headers=AUTH).get_json()["latest_score"]
    assert latest["source"] == "request" and latest["escalation"]["probability"] == queue_rows(client)["REQ-0"]["probability"]
    assert latest["escalation"]["probability"] == again.get_json()["escalation"]["probability"]


def test_the_dashboard_says_why_or_that_no_reasons_were_computed(served, wire_tickets):
    client, watcher = served
    watcher.tickets.record_events(wire_tickets, "ingest")
    now = max(datetime.fromisoformat(t["event_time"].replace("Z", "+00:00")) for t in wire_tickets) + timedelta(days=2)
    assert watcher.tick(now).ran
    scores = {t: client.get(f"/v1/tickets/{t}", headers=AUTH).get_json()["latest_score"] for t in queue_rows(client)}
    explained = next(t for t, s in scores.items() if s["reasons_computed"])
    unexplained = next(t for t, s in scores.items() if not s["reasons_computed"])
    # The dashboard shows the top of the queue: close the others so both tickets are on it.
    closing = [{"ticket_id": t, "event_time": now.isoformat(), "partial": True, "status": "closed"}
               for t in scores if t not in (explained, unexplained)]
    watcher.tickets.record_events(closing, "test")
    page = client.get("/dashboard", headers=AUTH)
    assert page.status_code == 200
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>([^<]+)</td>.*?</tr>", page.get_data(as_text=True),
                                                        re.DOTALL)}
    label = scores[explained]["escalation"]["reasons"][0]["label"]
    assert html.escape(label) in rows[explained], "an explained ticket's reasons are in its Why column"
    assert "no reasons computed" in rows[unexplained]
    assert scores[unexplained]["action"]["route_to"] in rows[unexplained], "its Action column is not blank"


def test_upgrade_from_the_previous_head_keeps_scores_readable(tmp_path, serving_models_dir, wire_tickets):
    """A store at 0003 with a request-scored and a watcher-scored ticket, upgraded to head: the column is
    added and both tickets show their latest score (from the columns and the score log) until re-scored."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0003_monitoring")
    engine = create_store_engine(url)
    assert "latest_score" not in {c["name"] for c in inspect(engine).get_columns("tickets")}
    with engine.begin() as connection:
        t0 = "2026-01-05 10:00:00.000000"
        for ticket_id, probability in (("OLD-REQ", 0.42), ("OLD-WATCH", 0.756)):
            connection.exec_driver_sql(
                "INSERT INTO tickets (ticket_id, created_at, last_event_time, updated_at, status, is_open, state, "
                "history, event_count, probability, band, escalate_now, scored_at, model_version) VALUES "
                "(?, ?, ?, ?, 'open', 1, '{}', '{}', 1, ?, ?, 0, ?, 'v0')",
                (ticket_id, t0, t0, t0, probability, "medium" if probability < 0.5 else "high", t0))
        connection.exec_driver_sql(
            "INSERT INTO ticket_scores (ticket_id, scored_at, model_version, probability, band, escalate_now, response)"
            " VALUES ('OLD-REQ', ?, 'v0', 0.42, 'medium', 0, ?)",
            (t0, '{"ticket_id": "OLD-REQ", "escalation": {"probability": 0.42, "band": "medium", '
                 '"escalate_now": false, "reasons": [{"label": "Repeat contacts", "direction": "up"}]}, '
                 '"action": {"route_to": "tier2"}}'))
    engine.dispose()
    upgrade_database(url)
    engine = create_store_engine(url)
    try:
        assert "latest_score" in {c["name"] for c in inspect(engine).get_columns("tickets")}
        store = TicketStore(engine)
        old_request = store.get_ticket("OLD-REQ")["latest_score"]
        assert old_request["source"] == "request" and old_request["escalation"]["reasons"][0]["label"] == "Repeat contacts"
        old_watch = store.get_ticket("OLD-WATCH")["latest_score"]
        assert (old_watch["source"], old_watch["reasons_computed"]) == ("watcher", False)
        assert old_watch["escalation"]["probability"] == 0.756 and old_watch["escalation"]["band"] == "high"
        detail = {t["ticket_id"]: t["latest_score"] for t in store.list_queue(detail=True)["tickets"]}
        assert detail["OLD-REQ"]["action"] == {"route_to": "tier2"} and detail["OLD-WATCH"]["source"] == "watcher"
    finally:
        engine.dispose()
