"""`escalation-risk ingest`'s bulk path (serving.ingest) against the store's normal recording path, on a
real SQLite file: the same events, states, counters and history facts as recording event by event, the
same history log as recording the same batches as API events, nothing new on a second run, each batch
committed before it is counted, rejected rows written out with their reasons."""

from __future__ import annotations

import random
import sqlite3

import pandas as pd
import pytest

from features.schema import validate_events
from features.synthetic import generate_event_log
from serving.ingest import ingest_events, to_event_dicts
from serving.store.db import create_store_engine, upgrade_database
from serving.store.merge import merge_event
from serving.store.tickets import TicketStore, normalize_event

TICKET_COLUMNS = ("ticket_id", "created_at", "last_event_time", "status", "is_open", "customer_id", "agent_id",
                  "group_name", "category", "state", "history", "event_count", "text_dropped_at", "probability")
EVENT_COLUMNS = ("ticket_id", "source", "source_event_id", "dedupe_key", "event_time", "partial", "fields", "has_text")
HISTORY_COLUMNS = ("ticket_id", "created_at", "ended_at", "escalated", "customer_id", "agent_id", "group_name",
                   "category")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> pd.DataFrame:
    """A generated export with what real ones have: microsecond times, a missing SLA time, blank text."""
    path = tmp_path_factory.mktemp("ingest") / "events.parquet"
    generate_event_log(path, n_tickets=60, seed=11, start="2026-01-01", months=1)
    raw = pd.read_parquet(path)
    raw.loc[3, "event_time"] = raw.loc[3, "event_time"] + pd.Timedelta(microseconds=123_456)
    raw.loc[5, "sla_due_at"] = pd.NaT
    raw.loc[7, "subject"] = None
    return raw


def new_store(tmp_path, name: str) -> tuple[TicketStore, str]:
    path = tmp_path / f"{name}.db"
    upgrade_database(f"sqlite:///{path}")
    return TicketStore(create_store_engine(f"sqlite:///{path}")), str(path)


def dump(path: str) -> dict[str, list]:
    """Every stored value but the received times, byte for byte (JSON as stored text)."""
    with sqlite3.connect(path) as connection:
        return {
            "tickets": connection.execute(f"SELECT {', '.join(TICKET_COLUMNS)} FROM tickets ORDER BY ticket_id").fetchall(),
            "events": connection.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM ticket_events "
                                         "ORDER BY ticket_id, event_time, dedupe_key").fetchall(),
            "history": connection.execute(f"SELECT {', '.join(HISTORY_COLUMNS)} FROM ticket_history "
                                          "ORDER BY seq").fetchall(),
        }


def api_events(events: pd.DataFrame) -> list[dict]:
    """Rows as an API client sends them: Timestamps and numpy numbers, missing values left out."""
    return [{k: v for k, v in row.items() if not (v is None or v is pd.NaT or (not isinstance(v, str) and pd.isna(v)))}
            for row in events.to_dict(orient="records")]


def test_event_dicts_are_what_the_api_path_normalizes(export):
    events = validate_events(export).events
    for fast, sent in zip(to_event_dicts(events), api_events(events), strict=True):
        expected = normalize_event(sent)
        assert fast == expected
        assert list(fast) == [k for k in expected if k in fast] and set(fast) == set(expected)  # key order too
    micro = to_event_dicts(events[events["event_time"].dt.microsecond > 0])
    assert any(e["event_time"].endswith(".123456+00:00") for e in micro)


def test_ingest_stores_what_recording_event_by_event_stores(export, tmp_path):
    """Batches of 50 (tickets straddle batches) against one API event at a time, time-ordered per ticket."""
    fast, fast_path = new_store(tmp_path, "fast")
    result = ingest_events(fast, export, batch_size=50)
    slow, slow_path = new_store(tmp_path, "slow")
    events = validate_events(export).events
    for event in api_events(events):
        slow.record_events([event], "ingest")
    assert result.recorded == len(events) and result.duplicates == 0
    got, want = dump(fast_path), dump(slow_path)
    assert got["events"] == want["events"]
    assert got["tickets"] == want["tickets"]  # states, counters, history facts, queue columns
    # The log appends a ticket's facts once per unit of work that changed them: the latest per ticket agree.
    latest = [{row[0]: row for row in log["history"]} for log in (got, want)]
    assert latest[0] == latest[1]


def test_ingest_history_log_is_the_same_batches_recorded_as_api_events(export, tmp_path):
    fast, fast_path = new_store(tmp_path, "fast")
    ingest_events(fast, export, batch_size=100)
    slow, slow_path = new_store(tmp_path, "slow")
    sent = api_events(validate_events(export).events)
    for start in range(0, len(sent), 100):
        slow.record_events(sent[start:start + 100], "ingest")
    assert dump(fast_path) == dump(slow_path)


def test_ingesting_twice_changes_nothing(export, tmp_path):
    store, path = new_store(tmp_path, "twice")
    first = ingest_events(store, export, batch_size=64)
    before = dump(path)
    again = ingest_events(store, export, batch_size=64)
    assert (again.recorded, again.duplicates) == (0, first.recorded)
    assert dump(path) == before


def test_a_batch_is_committed_before_it_is_counted(export, tmp_path):
    store, path = new_store(tmp_path, "durable")
    seen = []

    def progress(done: int, total: int) -> None:  # another connection sees every counted event
        with sqlite3.connect(path) as connection:
            seen.append((done, connection.execute("SELECT COUNT(*) FROM ticket_events").fetchone()[0]))

    result = ingest_events(store, export, batch_size=100, progress=progress)
    assert len(seen) == -(-result.recorded // 100)
    assert all(done == stored for done, stored in seen)


def test_rejected_rows_are_written_out_with_reasons_and_the_rest_recorded(export, tmp_path):
    raw = export.copy()
    raw["event_time"] = raw["event_time"].astype(object)
    raw.loc[2, "event_time"] = "not a time"
    raw.loc[4, "ticket_id"] = None
    store, path = new_store(tmp_path, "rejects")
    result = ingest_events(store, raw, batch_size=100, rejects_path=tmp_path / "rejects.csv")
    rejects = pd.read_csv(result.rejects_path)
    assert result.rejected == 2 and set(rejects["row"]) == {2, 4}
    assert rejects.set_index("row").loc[4, "reason"] == "missing ticket id"
    assert result.recorded == len(raw) - 2 == dump(path)["events"].__len__()


def test_a_full_event_merges_the_same_on_the_quick_path():
    """merge_event takes a quick path for a full event carrying only fields the state has; an explicit
    partial=False sends the same event through the field-by-field rules: the results are identical,
    key order included."""
    rng = random.Random(5)
    closed = frozenset({"closed"})
    state = merge_event(None, {"ticket_id": "T1", "event_time": "2026-01-01T09:00:00+00:00",
                               "created_at": "2026-01-01T09:00:00+00:00", "status": "new", "group": "a",
                               "customer_messages": 1, "agent_messages": 0, "escalation_level": 0}, closed)
    for hour in range(10, 40):
        event = {"ticket_id": "T1", "event_time": f"2026-01-0{1 + hour // 24}T{hour % 24:02d}:00:00+00:00",
                 "status": rng.choice(["open", "closed", "pending"]), "group": rng.choice(["a", "b"]),
                 "customer_messages": rng.randint(0, 9), "created_at": "2026-01-01T09:00:00+00:00"}
        for name in ("agent_messages", "escalation_level"):
            if rng.random() < 0.5:
                event[name] = rng.randint(0, 3)
        quick = merge_event(state, event, closed)
        rules = merge_event(state, {**event, "partial": False}, closed)
        assert list(quick.items()) == list(rules.items())
        state = quick
