"""The ticket store as a canonical event log: one row per event, the ticket's merged state after it.

The same rows an export gives training (features/schema.py's columns, the importer's `extra`
columns spread out), rebuilt by replaying each ticket's stored events in event-time order with the
store's own merge rules (serving/store/merge.py), so monitoring can label them with training's
snapshot code and `escalation-risk store export` can hand them to `make train`.

`known_by` keeps only what the service knew at that moment: events that happened AND were
received by then (an event received later, even with an earlier event time, was not known).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, and_, select
from sqlalchemy.orm import Session

from features.schema import CANONICAL_COLUMNS
from serving.store.merge import merge_event, normal_status
from serving.store.tables import TicketEventRow, TicketRow

EVENT_ID = "event_id"
RECEIVED_AT = "received_at"
CHUNK = 500


def find_ticket_ids(engine: Engine, created_from: datetime | None = None, created_to: datetime | None = None,
                    known_by: datetime | None = None) -> list[str]:
    """Ids of the tickets created in [created_from, created_to) (either end open when None), first
    seen by the store by `known_by` when given, in creation order."""
    conditions = []
    if created_from is not None:
        conditions.append(TicketRow.created_at >= created_from)
    if created_to is not None:
        conditions.append(TicketRow.created_at < created_to)
    if known_by is not None:
        conditions.append(TicketRow.created_at <= known_by)
    with Session(engine) as session:
        return list(session.execute(select(TicketRow.ticket_id).where(and_(True, *conditions))
                                    .order_by(TicketRow.created_at, TicketRow.ticket_id)).scalars())


def replay_states(engine: Engine, ticket_ids: Iterable[str], closed_statuses: Iterable[str],
                  known_by: datetime | None = None) -> list[dict]:
    """Each ticket's state after each of its events (event-time order), with the event's store id and
    received time; two events at the same event time give one row (the state after both)."""
    closed = frozenset(n for s in closed_statuses if (n := normal_status(s)) is not None)
    ids = list(ticket_ids)
    rows: list[dict] = []
    with Session(engine) as session:
        for start in range(0, len(ids), CHUNK):
            query = (select(TicketEventRow.ticket_id, TicketEventRow.id, TicketEventRow.event_time,
                            TicketEventRow.received_at, TicketEventRow.fields)
                     .where(TicketEventRow.ticket_id.in_(ids[start:start + CHUNK]))
                     .order_by(TicketEventRow.ticket_id, TicketEventRow.event_time, TicketEventRow.id))
            if known_by is not None:
                query = query.where(TicketEventRow.event_time <= known_by, TicketEventRow.received_at <= known_by)
            state, current = None, None
            for ticket_id, event_id, _event_time, received_at, fields in session.execute(query):
                if ticket_id != current:
                    state, current = None, ticket_id
                state = merge_event(state, fields, closed)
                row = {**state, EVENT_ID: event_id, RECEIVED_AT: received_at}
                if rows and rows[-1]["ticket_id"] == ticket_id and rows[-1]["event_time"] == row["event_time"]:
                    rows[-1] = row
                else:
                    rows.append(row)
    return rows


def to_event_frame(states: list[dict]) -> pd.DataFrame:
    """Canonical columns (missing ones empty), the importer's extra columns spread out, the event id and
    received time; statuses lower-cased as the store compares them."""
    extra_keys: list[str] = []
    for state in states:
        for key in state.get("extra") or {}:
            if key not in extra_keys and key not in CANONICAL_COLUMNS:
                extra_keys.append(key)
    columns = [*CANONICAL_COLUMNS, *extra_keys, EVENT_ID, RECEIVED_AT]
    records = [{**{k: (s.get("extra") or {}).get(k) for k in extra_keys}, **{k: s.get(k) for k in CANONICAL_COLUMNS},
                EVENT_ID: s.get(EVENT_ID), RECEIVED_AT: s.get(RECEIVED_AT)} for s in states]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ("event_time", "created_at", "sla_due_at", RECEIVED_AT):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    frame["status"] = frame["status"].astype("string").str.strip().str.lower()
    return frame


def read_event_log(engine: Engine, closed_statuses: Iterable[str], created_from: datetime | None = None,
                   created_to: datetime | None = None, known_by: datetime | None = None) -> pd.DataFrame:
    """The event log of the tickets created in [created_from, created_to), as known by `known_by`."""
    ids = find_ticket_ids(engine, created_from, created_to, known_by)
    return to_event_frame(replay_states(engine, ids, closed_statuses, known_by))
