"""The ticket store under failure: a worker killed with SIGKILL during an ingest through the API, and two
service instances recording concurrently into one PostgreSQL store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import tempfile
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.reliability.conftest import AUTH, service_env
from tests.reliability.harness import Service, start_service

pytestmark = pytest.mark.reliability

N_EVENTS = 10_000
N_TICKETS = 200
BATCH = 50


def ticket_creations(n: int, prefix: str) -> list[dict]:
    return [{"ticket_id": f"{prefix}{i}", "event_time": "2026-04-01T08:00:00Z", "created_at": "2026-04-01T08:00:00Z",
             "channel": "email", "category": "billing", "priority": "normal", "customer_id": f"C{i % 40}",
             "group": "billing", "status": "open", "customer_messages": 0, "agent_messages": 0,
             "subject": "Invoice question", "description": "Charged twice.", "source_event_id": f"{prefix}{i}-created"}
            for i in range(n)]


def message_events(n: int, n_tickets: int, prefix: str) -> list[dict]:
    """n customer messages spread over the tickets, each a partial event with its own delivery id."""
    return [{"ticket_id": f"{prefix}{i % n_tickets}", "partial": True, "source_event_id": f"{prefix}msg-{i}",
             "event_time": f"2026-04-01T{9 + (i // n_tickets) // 60:02d}:{(i // n_tickets) % 60:02d}:00Z",
             "customer_message": f"message {i}"} for i in range(n)]


def post_batches(service: Service, events: list[dict], acknowledged: list[str], failed: list[list[dict]]) -> None:
    for start in range(0, len(events), BATCH):
        batch = events[start:start + BATCH]
        try:
            status, body, _ = service.call("POST", "/v1/events", {"events": batch}, headers=AUTH)
        except OSError:
            status = 0
        if status == 200:
            acknowledged.extend(e["source_event_id"] for e in batch)
        else:
            failed.append(batch)


def test_kill_9_during_an_ingest_loses_no_acknowledged_event(models_dir, tmp_path):
    store_path = tmp_path / "tickets.db"
    env = service_env(models_dir, ESCALATION_RISK_STORE_URL=f"sqlite:///{store_path}")
    service = start_service(env, tmp_path / "gunicorn-1.log")
    acknowledged: list[str] = []
    failed: list[list[dict]] = []
    try:
        post_batches(service, ticket_creations(N_TICKETS, "K"), acknowledged, failed)
        assert not failed
        messages = message_events(N_EVENTS - N_TICKETS, N_TICKETS, "K")
        sender = threading.Thread(target=post_batches, args=(service, messages, acknowledged, failed))
        sender.start()
        while len(acknowledged) < N_TICKETS + len(messages) // 3 and sender.is_alive():
            threading.Event().wait(0.05)
        victim = service.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)  # mid-ingest, a worker dies without any cleanup
        sender.join(timeout=600)
    finally:
        service.stop(signal.SIGKILL)  # and then the whole service, as a crash would
    assert acknowledged, "nothing was acknowledged"

    restarted = start_service(env, tmp_path / "gunicorn-2.log")
    try:
        counts = event_counts(store_path)
        assert all(counts[event_id] == 1 for event_id in acknowledged), "an acknowledged event is missing or doubled"
        # Resending everything (what a sender that got no answer does) changes nothing it already had.
        retry_ack: list[str] = []
        post_batches(restarted, ticket_creations(N_TICKETS, "K") + messages, retry_ack, failed := [])
        assert not failed
    finally:
        restarted.stop()
    counts = event_counts(store_path)
    assert len(counts) == N_EVENTS and set(counts.values()) == {1}
    with sqlite3.connect(store_path) as db:
        messages_per_ticket = dict(db.execute(
            "SELECT ticket_id, json_extract(state, '$.customer_messages') FROM tickets").fetchall())
    sent = Counter(e["ticket_id"] for e in messages)
    assert messages_per_ticket == dict(sent)


def event_counts(store_path: Path) -> Counter:
    with sqlite3.connect(store_path) as db:
        return Counter(dict(db.execute(
            "SELECT source_event_id, count(*) FROM ticket_events GROUP BY source_event_id").fetchall()))


@pytest.fixture(scope="module")
def postgres_store_url():
    """A throwaway PostgreSQL cluster on a free loopback port (training.tracking_server's), for the module."""
    import shutil

    from training.tracking_server import PostgresUnavailable, find_free_port, find_postgres_bin, run_postgres

    try:
        find_postgres_bin()
    except PostgresUnavailable as exc:
        pytest.skip(f"{exc} (`make test` installs it when run as root)")
    root = Path(tempfile.mkdtemp(prefix="escalation-risk-store-pg-"))
    root.chmod(0o755)  # the postgres user must reach its folder
    try:
        with run_postgres(root, find_free_port()) as pg:
            yield pg.uri
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_instances_on_one_postgres_store_lose_no_update(models_dir, tmp_path, postgres_store_url):
    env = service_env(models_dir, ESCALATION_RISK_STORE_URL=postgres_store_url)
    first = start_service(env, tmp_path / "a.log")
    second = start_service(env, tmp_path / "b.log")
    try:
        acknowledged: list[str] = []
        failed: list[list[dict]] = []
        post_batches(first, ticket_creations(20, "P"), acknowledged, failed)
        messages = message_events(2000, 20, "P")
        # Each instance gets every other batch, two senders each: all four write the same 20 tickets at once.
        halves = [messages[i::2] for i in range(2)]
        threads = [threading.Thread(target=post_batches, args=(svc, part[j::2], acknowledged, failed))
                   for svc, part in zip((first, second), halves, strict=True) for j in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not failed, f"{len(failed)} batches failed"
        status, ticket, _ = second.call("GET", "/v1/tickets/P3", headers=AUTH)
        assert status == 200
    finally:
        first.stop()
        second.stop()
    engine = create_engine(postgres_store_url)
    with engine.connect() as conn:
        counters = dict(conn.execute(text("SELECT ticket_id, state FROM tickets")).all())
        events = conn.execute(text("SELECT count(*) FROM ticket_events")).scalar_one()
    engine.dispose()
    sent = Counter(e["ticket_id"] for e in messages)
    got = {tid: (state if isinstance(state, dict) else json.loads(state))["customer_messages"]
           for tid, state in counters.items()}
    assert got == dict(sent) and events == 2000 + 20


def test_ingest_on_postgres_stores_what_recording_event_by_event_stores(tmp_path, postgres_store_url):
    """serving.ingest's bulk path on PostgreSQL (two fresh databases of the module's cluster): the same
    events, states, counters and latest history facts as one API event at a time, and nothing new twice."""
    import pandas as pd
    from sqlalchemy.engine import make_url

    from features.schema import validate_events
    from features.synthetic import generate_event_log
    from serving.ingest import ingest_events
    from serving.store.db import create_store_engine, upgrade_database
    from serving.store.tickets import TicketStore
    from tests.serving.test_ingest import EVENT_COLUMNS, HISTORY_COLUMNS, TICKET_COLUMNS, api_events

    generate_event_log(tmp_path / "events.parquet", n_tickets=30, seed=12, start="2026-01-01", months=1)
    raw = pd.read_parquet(tmp_path / "events.parquet")
    admin = create_engine(postgres_store_url, isolation_level="AUTOCOMMIT")
    urls = {}
    with admin.connect() as conn:
        for name in ("ingest_fast", "ingest_slow"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name}"))
            urls[name] = make_url(postgres_store_url).set(database=name).render_as_string(hide_password=False)
    admin.dispose()
    stores = {}
    for name, url in urls.items():
        upgrade_database(url)
        stores[name] = TicketStore(create_store_engine(url))
    result = ingest_events(stores["ingest_fast"], raw, batch_size=40)
    for event in api_events(validate_events(raw).events):
        stores["ingest_slow"].record_events([event], "ingest")
    again = ingest_events(stores["ingest_fast"], raw, batch_size=40)
    dumps = {}
    for name, store in stores.items():
        with store.engine.connect() as conn:
            dumps[name] = {
                "tickets": conn.execute(text(f"SELECT {', '.join(TICKET_COLUMNS)} FROM tickets ORDER BY ticket_id")).all(),
                "events": conn.execute(text(f"SELECT {', '.join(EVENT_COLUMNS)} FROM ticket_events "
                                            "ORDER BY ticket_id, event_time, dedupe_key")).all(),
                "history": {row[0]: row for row in conn.execute(text(
                    f"SELECT {', '.join(HISTORY_COLUMNS)} FROM ticket_history ORDER BY seq")).all()},
            }
        store.engine.dispose()
    assert result.recorded == len(dumps["ingest_slow"]["events"]) and result.duplicates == 0
    assert (again.recorded, again.duplicates) == (0, result.recorded)
    assert dumps["ingest_fast"] == dumps["ingest_slow"]
