"""The ticket store on a real SQLite file: merge rules, idempotency, late events, history facts,
queue, retention, migrations and a locked database."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import inspect

from features.history import summarize_tickets
from features.schema import validate_events
from features.synthetic import generate_event_log
from serving.ingest import to_event_dicts
from serving.store.db import StoreUnavailable, alembic_config, create_store_engine, upgrade_database
from serving.store.tickets import EventError, TicketStore

T0 = "2026-02-02T09:00:00+00:00"


@pytest.fixture()
def store_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store' / 'tickets.db'}"
    upgrade_database(url)
    return url


@pytest.fixture()
def store(store_url) -> TicketStore:
    return TicketStore(create_store_engine(store_url))


def at(hour: int, minute: int = 0) -> str:
    return f"2026-02-02T{hour:02d}:{minute:02d}:00+00:00"


def created(store: TicketStore, ticket_id: str = "T1", **fields) -> dict:
    event = {"ticket_id": ticket_id, "event_time": T0, "created_at": T0, "group": "billing", "status": "new",
             "customer_id": "C1", "customer_messages": 1, "agent_messages": 0, **fields}
    return store.record_events([event], "test")[0].state


def partial(store: TicketStore, hour: int, ticket_id: str = "T1", **fields):
    return store.record_events([{"ticket_id": ticket_id, "event_time": at(hour), "partial": True, **fields}], "test")[0]


def _head_revision(url: str) -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    assert len(script.get_heads()) == 1, f"the migrations branch: heads {script.get_heads()}"
    return script.get_current_head()


def test_migrations_create_the_tables_once(store_url):
    upgrade_database(store_url)  # a second upgrade is a no-op
    engine = create_store_engine(store_url)
    names = set(inspect(engine).get_table_names())
    assert {"tickets", "ticket_events", "ticket_scores", "ticket_history", "alembic_version"} <= names
    assert {"alerts", "alert_events", "deliveries", "leases"} <= names
    with engine.connect() as conn:
        # at the newest revision of the chain (0001_tickets -> 0002_alerts -> 0003_monitoring ...)
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == _head_revision(store_url)
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_partial_events_merge_by_the_documented_rules(store):
    created(store)
    state = partial(store, 10, customer_message="This is the third time I am calling!").state
    assert state["customer_messages"] == 2
    assert state["last_customer_message"] == "This is the third time I am calling!"
    assert state["group"] == "billing" and state["status"] == "new"  # untouched fields stay
    assert partial(store, 11, agent_message="Looking into it").state["agent_messages"] == 1
    assert partial(store, 12, group="tier2").state["reassignment_count"] == 1
    assert partial(store, 13, status="closed").state.get("reopen_count") is None
    state = partial(store, 14, status="open").state
    assert state["reopen_count"] == 1
    state = partial(store, 15, escalation_level=1, escalation_type="hierarchical").state
    assert (state["escalation_level"], state["escalation_type"]) == (1, "hierarchical")
    # An explicit counter wins over the derived increment; an explicit null clears a field.
    state = partial(store, 16, group="tier3", reassignment_count=7, agent_id=None).state
    assert state["reassignment_count"] == 7 and state["agent_id"] is None
    ticket = store.get_ticket("T1")
    assert ticket["events"] == 8 and ticket["open"] is True


def test_a_full_ticket_keeps_what_it_does_not_say(store):
    created(store)
    partial(store, 10, customer_message="hello?")
    state = store.record_events([{"ticket_id": "T1", "event_time": at(11), "created_at": T0, "status": "open",
                                  "customer_messages": None, "priority": "high"}], "test")[0].state
    assert state["customer_messages"] == 2 and state["priority"] == "high" and state["status"] == "open"


def test_same_delivery_twice_is_recorded_once(store):
    created(store)
    first = partial(store, 10, customer_message="where is my refund", source_event_id="zd-1")
    again = partial(store, 10, customer_message="where is my refund", source_event_id="zd-1")
    assert again.duplicate and again.event_id == first.event_id
    assert again.state["customer_messages"] == 2
    # Same ticket, time and content without an id: also a duplicate; different content is not.
    a = partial(store, 11, agent_message="on it")
    b = partial(store, 11, agent_message="on it")
    c = partial(store, 11, agent_message="on it, again")
    assert b.duplicate and b.event_id == a.event_id and not c.duplicate
    # A batch holding the same event twice records it once.
    twice = store.record_events([{"ticket_id": "T1", "event_time": at(12), "partial": True, "customer_message": "x"}] * 2,
                                "test")
    assert [r.duplicate for r in twice] == [False, True] and twice[0].event_id == twice[1].event_id
    assert store.get_ticket("T1")["state"]["customer_messages"] == 3
    assert store.count_events() == 5


def test_late_events_merge_in_event_time_order(store):
    created(store)
    partial(store, 12, group="tier2")
    partial(store, 14, status="closed")
    late = partial(store, 10, group="tier1")  # happened before the move to tier2
    state = late.state
    assert state["group"] == "tier2" and state["status"] == "closed"
    assert state["reassignment_count"] == 2  # billing -> tier1 -> tier2, in event-time order
    assert store.get_ticket("T1")["state"] == state


def test_bad_events_are_refused_naming_the_fields_and_nothing_is_written(store):
    created(store)
    with pytest.raises(EventError) as unknown:
        store.record_events([{"ticket_id": "T1", "event_time": at(10), "partial": True, "customer_message": "a"},
                             {"ticket_id": "NEW", "event_time": at(10), "partial": True}], "test")
    assert unknown.value.problems[0][:2] == (1, "created_at")
    with pytest.raises(EventError) as early:
        partial(store, 8)
    assert early.value.problems[0][1] == "event_time" and "created_at" in early.value.problems[0][2]
    assert store.count_events() == 1  # the good event of the refused batch was not written either
    assert store.get_ticket("NEW") is None


def test_history_facts_equal_summarize_tickets(store, tmp_path):
    """Recording a generated log event by event leaves each ticket's history row equal to
    features.history.summarize_tickets of the same events (the facts the live history counts)."""
    path = tmp_path / "events.parquet"
    generate_event_log(path, n_tickets=120, seed=3, start="2026-01-01", months=1)
    events = validate_events(pd.read_parquet(path)).events
    ordered = events.sort_values("event_time", kind="stable")
    for start in range(0, len(ordered), 37):  # in time order, in small batches
        store.record_events(to_event_dicts(ordered.iloc[start:start + 37]), "test")
    latest = {}
    for row in store.read_history_since(0):
        latest[row["ticket_id"]] = row
    expected = summarize_tickets(events, ["closed"]).set_index("ticket_id")
    assert set(latest) == set(expected.index)
    for ticket_id, row in latest.items():
        want = expected.loc[ticket_id]
        assert row["created_at"] == want["created_at"].to_pydatetime()
        assert (row["ended_at"] is None) == pd.isna(want["ended_at"])
        if row["ended_at"] is not None:
            assert row["ended_at"] == want["ended_at"].to_pydatetime()
        assert row["escalated"] == bool(want["escalated"])
        for column in ("customer_id", "agent_id", "group", "category"):
            assert row[column] == (None if pd.isna(want[column]) else want[column]), column


def score_of(ticket_id: str, probability: float, band: str) -> dict:
    return {"ticket_id": ticket_id, "escalation": {"probability": probability, "band": band, "escalate_now": False,
                                                   "reasons": []},
            "priority": {"predicted": "normal", "probabilities": {}}, "action": {"rule": "default"},
            "model": {"name": "m", "version": "v"}, "scored_at": T0, "warnings": []}


def test_queue_orders_open_tickets_by_risk_with_filters_and_pages(store):
    for i, (group, probability) in enumerate([("a", 0.2), ("b", 0.9), ("a", 0.5), ("b", 0.7), ("a", 0.95)]):
        created(store, f"Q{i}", group=group)
        band = "high" if probability > 0.8 else "medium" if probability > 0.4 else "low"
        store.record_scores([score_of(f"Q{i}", probability, band)], "v", datetime.now(UTC))
    partial(store, 10, ticket_id="Q4", status="closed")  # closed tickets leave the queue
    page = store.list_queue(limit=2)
    assert [t["ticket_id"] for t in page["tickets"]] == ["Q1", "Q3"] and page["total"] == 4
    assert [t["ticket_id"] for t in store.list_queue(limit=2, offset=2)["tickets"]] == ["Q2", "Q0"]
    assert [t["ticket_id"] for t in store.list_queue(group="a")["tickets"]] == ["Q2", "Q0"]
    assert [t["ticket_id"] for t in store.list_queue(band="high")["tickets"]] == ["Q1"]
    assert [t["ticket_id"] for batch in store.iter_open_tickets(2) for t in batch] == ["Q0", "Q1", "Q2", "Q3"]


def test_purge_drops_text_and_keeps_ids_counters_and_scores(store):
    created(store, subject="Refund", description="card number in here")
    partial(store, 10, customer_message="angry words")
    store.record_scores([score_of("T1", 0.4, "medium")], "v", datetime.now(UTC))
    counts = store.purge_text(datetime(2026, 3, 1, tzinfo=UTC))
    assert counts == {"events": 2, "tickets": 1}
    ticket = store.get_ticket("T1")
    state = ticket["state"]
    assert "subject" not in state and "description" not in state and "last_customer_message" not in state
    assert state["customer_messages"] == 2 and state["group"] == "billing"
    assert ticket["latest_score"]["escalation"]["probability"] == 0.4
    assert all(not e["fields"].get("customer_message") and "subject" not in e["fields"]
               for e in ticket["timeline"] if e["kind"] == "event")
    assert store.purge_text(datetime(2026, 3, 1, tzinfo=UTC)) == {"events": 0, "tickets": 0}


def test_a_replay_after_a_purge_still_counts_the_purged_messages(store):
    """An event older than the latest (a retried delivery) replays the ticket's events: messages whose
    text the retention purge dropped still count (seen as a kill -9 test losing 48 of 49 messages)."""
    created(store)
    for hour in (10, 11, 12):
        partial(store, hour, customer_message=f"message at {hour}", agent_message="on it")
    store.purge_text(datetime(2026, 3, 1, tzinfo=UTC))
    late = partial(store, 9, customer_message="sent before the others, delivered last")
    assert late.state["customer_messages"] == 1 + 4 and late.state["agent_messages"] == 3
    assert late.state["last_customer_message"] == "", "the newest message's text was purged"


def test_a_locked_database_is_store_unavailable_and_nothing_is_half_written(store_url):
    store = TicketStore(create_store_engine(store_url, busy_timeout_seconds=0.2))
    created(store)
    path = store_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(StoreUnavailable) as busy:
            partial(store, 10, customer_message="hello")
        assert busy.value.retry_after >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.count_events() == 1
    assert partial(store, 10, customer_message="hello").state["customer_messages"] == 2


def test_the_purge_command_reads_iso_times_and_refuses_a_future_date(store, store_url, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("ESCALATION_RISK_STORE_URL", store_url)
    created(store, subject="Refund", description="card number in here")  # event at 09:00 UTC
    runner = CliRunner()
    future = runner.invoke(main, ["db", "purge", "--before", "2999-01-01"])
    assert future.exit_code == 2 and "in the future" in future.output, future.output
    assert store.get_ticket("T1")["state"]["subject"] == "Refund", "nothing dropped"
    bad = runner.invoke(main, ["db", "purge", "--before", "last tuesday"])
    assert bad.exit_code == 2 and "not an ISO 8601 date" in bad.output and "Traceback" not in bad.output
    # 10:30+02:00 is 08:30 UTC: before the 09:00 event, so nothing goes yet; 09:30Z takes it.
    early = runner.invoke(main, ["db", "purge", "--before", "2026-02-02T10:30:00+02:00"])
    assert early.exit_code == 0 and "0 events" in early.output, early.output
    done = runner.invoke(main, ["db", "purge", "--before", "2026-02-02T09:30:00Z"])
    assert done.exit_code == 0 and "1 events and 1 tickets" in done.output, done.output
    assert "subject" not in store.get_ticket("T1")["state"]
