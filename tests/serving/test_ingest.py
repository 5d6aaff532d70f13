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


def test_an_export_row_before_the_stored_creation_is_rejected_and_its_batch_recorded(export, tmp_path):
    """A ticket the store already holds (created later, through the API) and an export row of it from
    before that creation: the row is a reject with the store's reason, the rest is recorded."""
    raw = export.sort_values(["ticket_id", "event_time"], kind="stable").reset_index(drop=True)
    ticket_id = raw.loc[0, "ticket_id"]
    own = raw.index[raw["ticket_id"] == ticket_id]
    store, path = new_store(tmp_path, "stored-creation")
    later = raw.loc[own[-1], "event_time"] + pd.Timedelta(days=1)
    store.record_events([{"ticket_id": ticket_id, "created_at": later.isoformat(), "event_time": later.isoformat(),
                          "customer_messages": 1}], "api")
    result = ingest_events(store, raw, batch_size=7, rejects_path=tmp_path / "rejects.csv")
    rejects = pd.read_csv(result.rejects_path)
    assert set(rejects["row"]) == set(own.tolist()), rejects
    assert set(rejects["column"]) == {"event_time"} and rejects["reason"].str.contains("(as stored)").all()
    assert result.rejected == len(own) and result.recorded == len(raw) - len(own)
    assert len(dump(path)["events"]) == len(raw) - len(own) + 1  # and the API's event


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


# --- `escalation-risk ingest` as a user meets it: bad files, bad counters, the reject share ---

HEADER = "ticket_id,event_time,created_at,customer_messages"
# (ticket, customer_messages as written in the CSV, stored value or the reject reason)
COUNTER_CASES = [
    ("T1", "1.5", "counter not a whole number"),
    ("T2", "99999999999", "counter above the maximum 1,000,000"),
    ("T3", "1e2", 100),  # the whole number 100 written in exponent form
    ("T4", "3", 3),
    ("T5", "-1", "negative counter"),
    ("T6", "abc", "not a number"),
    ("T7", "", 0),  # missing: 0, as the API's default
    ("T8", "3.0", 3),
    ("T9", "1000000", 1_000_000),
    ("T10", "1000001", "counter above the maximum 1,000,000"),
]


def run_ingest(tmp_path, monkeypatch, *args):
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("ESCALATION_RISK_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("ESCALATION_RISK_REPORTS_DIR", str(tmp_path / "reports"))
    return CliRunner().invoke(main, ["ingest", *map(str, args)])


def stored_counters(tmp_path) -> dict[str, int]:
    import json

    with sqlite3.connect(tmp_path / "cli.db") as connection:
        rows = connection.execute("SELECT ticket_id, fields FROM ticket_events").fetchall()
    return {ticket: json.loads(fields).get("customer_messages") for ticket, fields in rows}


@pytest.mark.parametrize("name, content, expected", [
    ("nocreated.csv", "ticket_id,event_time\nT1,2026-01-01T00:00:00\n", "missing required column(s): created_at"),
    ("x.txt", "a;b\n", "reads as one column"),
    ("empty.csv", "", "is empty"),
    ("folder", None, "is a directory, read as one Parquet dataset"),
])
def test_an_unusable_export_is_one_line_naming_the_file_exit_2(tmp_path, monkeypatch, name, content, expected):
    path = tmp_path / name
    if content is None:  # a folder holding a CSV: read as a Parquet dataset
        path.mkdir()
        (path / "bad.csv").write_text(f"{HEADER}\nT1,2026-01-02,2026-01-01,1\n")
    else:
        path.write_text(content)
    result = run_ingest(tmp_path, monkeypatch, "--data", path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    assert expected in result.output and name in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_counters_are_refused_like_the_api_and_the_good_rows_recorded(tmp_path, monkeypatch):
    path = tmp_path / "counters.csv"
    path.write_text("\n".join([HEADER, *(f"{t},2026-01-01T01:00:00,2026-01-01T00:00:00,{v}" for t, v, _ in
                                         COUNTER_CASES)]) + "\n")
    result = run_ingest(tmp_path, monkeypatch, "--data", path, "--max-reject-share", "1")
    assert result.exit_code == 0, result.output
    bad = {t: outcome for t, _, outcome in COUNTER_CASES if isinstance(outcome, str)}
    rejects = pd.read_csv(tmp_path / "reports" / "ingest_rejects.csv", dtype={"value": "string"})
    assert dict(zip(rejects["ticket_id"], rejects["reason"], strict=True)) == bad
    assert set(rejects["column"]) == {"customer_messages"}
    # `row` counts data rows from 0: the line after the header is row 0.
    assert list(rejects["row"]) == [i for i, (t, _, _) in enumerate(COUNTER_CASES) if t in bad]
    assert stored_counters(tmp_path) == {t: outcome for t, _, outcome in COUNTER_CASES if t not in bad}
    assert f"REJECTED {len(bad)} of {len(COUNTER_CASES)} rows" in result.output
    assert "customer_messages: counter not a whole number (1 rows)" in result.output


def test_more_rejects_than_allowed_exit_2_after_recording_the_good_rows(tmp_path, monkeypatch):
    path = tmp_path / "counters.csv"
    path.write_text("\n".join([HEADER, *(f"{t},2026-01-01T01:00:00,2026-01-01T00:00:00,{v}" for t, v, _ in
                                         COUNTER_CASES)]) + "\n")
    result = run_ingest(tmp_path, monkeypatch, "--data", path)  # default --max-reject-share 0.05
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "50.0% of the 10 rows of" in result.output and "5 new good rows are recorded" in result.output
    assert len(stored_counters(tmp_path)) == 5
    again = run_ingest(tmp_path, monkeypatch, "--data", path)
    assert again.exit_code == 2 and "the 0 new good rows are recorded" in again.output
    assert len(stored_counters(tmp_path)) == 5


@pytest.mark.parametrize("value", [0, 3, 3.0, 100.0, 1.5, -1, 1_000_000, 1_000_001, 99_999_999_999, float("inf")])
def test_export_validation_and_the_api_agree_on_counters(value):
    from pydantic import TypeAdapter, ValidationError

    from serving.schemas import Count

    try:
        TypeAdapter(Count).validate_python(value)
        api_accepts = True
    except ValidationError:
        api_accepts = False
    raw = pd.DataFrame({"ticket_id": ["T1"], "event_time": ["2026-01-01T01:00:00"],
                        "created_at": ["2026-01-01T00:00:00"], "customer_messages": [value]})
    result = validate_events(raw)
    assert (len(result.rejects) == 0) == api_accepts, (value, result.rejects.to_dict("records"))
    if api_accepts:
        assert result.events["customer_messages"].tolist() == [int(value)]
