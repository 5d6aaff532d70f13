"""TicketStore: record events and scores, read a ticket, the open queue and the history log.

Every method is one unit of work in its own Session, committed before it returns (a caller
that answers 2xx after `record_events` has its events on disk). Events merge onto the stored
state in event-time order (serving/store/merge.py); one that arrives late (earlier than the
latest merged event) replays the ticket's events from the start. The same delivery twice
(same source event id, or same ticket, event time and content) is recorded once.

Concurrency: SQLite writers take the write lock at BEGIN (serving.store.db.write_engine);
PostgreSQL writers lock each ticket row they merge into (SELECT ... FOR UPDATE, in ticket-id
order), and a unit that collides on a new ticket or a duplicate is retried, so two service
instances never lose each other's updates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import orjson
from sqlalchemy import Engine, and_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from serving.store.db import StoreUnavailable, unavailable_reason, write_engine
from serving.store.merge import (
    EVENT_TEXT_FIELDS,
    STATE_FIELDS,
    TEXT_FIELDS,
    drop_text,
    history_fields,
    is_closed,
    merge_event,
    normal_status,
    update_facts,
)
from serving.store.tables import HistoryRow, ScoreRow, TicketEventRow, TicketRow

TICKETS, EVENTS, SCORES, HISTORY = (TicketRow.__table__, TicketEventRow.__table__, ScoreRow.__table__,
                                    HistoryRow.__table__)
EVENT_KEYS = frozenset((*STATE_FIELDS, "customer_message", "agent_message"))
CHUNK = 500  # ids per IN (...) list
EVENT_TIME = attrgetter("event_time")
EVENT_COLUMNS = ("ticket_id", "source", "source_event_id", "dedupe_key", "received_at", "partial", "event_time", "fields",
                 "has_text")
MAX_ATTEMPTS = 4


class EventError(ValueError):
    """Events that cannot be merged; `problems` are (input index, field, message). Nothing was written."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        super().__init__("; ".join(f"event {i}: {f}: {m}" for i, f, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class RecordedEvent:
    """What became of one input event: the ticket's merged state after the unit of work."""

    ticket_id: str
    state: dict
    duplicate: bool
    event_id: int
    index: int = 0


def utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(value: object) -> datetime | None:
    """A datetime (aware or naive = UTC) or an ISO 8601 string, as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return utc(value)
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return utc(value.to_pydatetime())
    return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc(moment).isoformat()


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return value.item()
    return value


def normalize_event(event: dict) -> dict:
    """The event's canonical keys only, JSON-ready: times as UTC ISO strings, ticket_id a string."""
    out: dict = {"ticket_id": str(event["ticket_id"])}
    for key, value in event.items():
        if key in EVENT_KEYS:
            if key in ("event_time", "created_at", "sla_due_at"):
                out[key] = iso(parse_time(value))
            elif key == "extra" and isinstance(value, dict):
                out[key] = {str(k): _jsonable(v) for k, v in value.items()}
            else:
                out[key] = _jsonable(value)
    if event.get("partial"):
        out["partial"] = True
    return out


def latest_score_record(score: dict, source: str, reasons_computed: bool = True) -> dict:
    """What the tickets row keeps as a ticket's latest score: the score_states response as given, plus
    `source` ("request": answered to /v1/score, /v1/events or an integration; "watcher": a queue-watch
    re-score) and `reasons_computed` (False: scored without reasons, so an empty `reasons` list means
    "not computed", not "nothing notable"; the watcher explains only the tickets above the alert line)."""
    return {**score, "source": source, "reasons_computed": bool(reasons_computed)}


def dedupe_key(event: dict, source: str, source_event_id: object) -> str:
    """The idempotency key: the source's event id when given, else the ticket, time and content."""
    if source_event_id not in (None, ""):
        raw = b"id\x00" + source.encode() + b"\x00" + str(source_event_id).encode()
    else:
        raw = b"content\x00" + orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


class BulkInsert:
    """INSERT of many rows of one table as one driver-level executemany.

    The values go through each column type's own bind processor for the dialect (so they are stored
    exactly as `connection.execute(insert(table), rows)` stores them), but without SQLAlchemy's
    per-row parameter compilation, which measured as much CPU as SQLite's own work for the event log.
    """

    def __init__(self, table, dialect, columns: Iterable[str]):
        self.columns = tuple(columns)
        compiled = insert(table).values({c: bindparam(c) for c in self.columns}).compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        order = compiled.positiontup if self.positional else self.columns
        self.order = tuple(order)
        self.processors = {c: table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns}

    def execute(self, connection, rows: list[dict]) -> None:
        if not rows:
            return
        columns = {}
        for name in self.order:
            values = [row[name] for row in rows]
            first = values[0]
            columns[name] = Repeat(first) if all(v is first for v in values) else values
        self.execute_columns(connection, columns, len(rows))

    def execute_columns(self, connection, columns: dict[str, list | Repeat], n: int) -> None:
        """The rows given column by column (`n` values each; a Repeat is one value for every row)."""
        if not n:
            return
        processed = []
        for name in self.order:
            values = columns[name]
            process = self.processors[name]
            if isinstance(values, Repeat):  # e.g. one received_at for a whole unit of work
                values = [values.value if process is None else process(values.value)] * n
            elif process is not None:
                values = [process(v) for v in values]
            processed.append(values)
        if self.positional:
            parameters = list(zip(*processed, strict=True))
        else:
            parameters = [dict(zip(self.order, values, strict=True)) for values in zip(*processed, strict=True)]
        connection.exec_driver_sql(self.sql, parameters)


@dataclass(frozen=True, slots=True)
class Repeat:
    """One value for every row of a BulkInsert column."""

    value: object


@dataclass
class ScoresToRecord:
    """Scores to record (score_states' response dicts) with the events they answered and their features."""

    scores: list[dict]
    model_version: str
    scored_at: datetime
    event_ids: list[int | None] | None = None
    features: list[dict | None] | None = None


@dataclass(slots=True)
class _Pending:
    index: int
    event: dict  # normalized
    event_time: datetime
    key: str
    source_event_id: str | None


@dataclass(slots=True)
class _Merged:
    """TicketStore._merge_ticket's answer for one ticket."""

    seen: dict
    state: dict | None = None
    facts: dict | None = None
    replay: bool = False
    new: list[_Pending] = field(default_factory=list)
    results: dict[int, tuple] = field(default_factory=dict)
    problems: list[tuple[int, str, str]] = field(default_factory=list)


def stored_latest_score(row, logged: ScoreRow | None) -> dict | None:
    """A tickets row's latest score (latest_score_record, with `features` and `scored_at`), None when never scored.

    `row` has probability, band, escalate_now, scored_at, model_version, latest_score (and features, when
    read); `logged` is the ticket's latest ticket_scores row. A row scored before migration 0004 has no
    latest_score: its score is the logged one when that is the row's (same time), else a watcher re-score
    of which only the columns were kept (reasons not computed)."""
    features = getattr(row, "features", None)
    if row.latest_score is not None:
        return {**row.latest_score, "features": features}
    if row.probability is None:
        return None
    if logged is not None and utc(logged.scored_at) == utc(row.scored_at):
        return {**latest_score_record(logged.response, "request"), "features": features}
    return {"ticket_id": row.ticket_id, "source": "watcher", "reasons_computed": False, "scored_at": iso(row.scored_at),
            "model": {"version": row.model_version},
            "escalation": {"probability": row.probability, "band": row.band, "escalate_now": row.escalate_now,
                           "reasons": []}, "action": None, "features": None}


class TicketStore:
    """The store's units of work on an engine (serving.store.db.create_store_engine)."""

    def __init__(self, engine: Engine, closed_statuses: Iterable[str] = ("closed",)):
        self.engine = engine
        self.write = write_engine(engine)
        self.closed_statuses = frozenset(normal_status(s) for s in closed_statuses)
        self.postgres = engine.dialect.name == "postgresql"
        # Statements built once (Core, on the tables): the hot path only binds parameters.
        lock = select(TICKETS.c.ticket_id, TICKETS.c.state, TICKETS.c.history, TICKETS.c.event_count).where(
            TICKETS.c.ticket_id.in_(bindparam("ids", expanding=True)))
        self._lock = lock.order_by(TICKETS.c.ticket_id).with_for_update() if self.postgres else lock
        one = select(TICKETS.c.ticket_id, TICKETS.c.state, TICKETS.c.history, TICKETS.c.event_count).where(
            TICKETS.c.ticket_id == bindparam("id"))
        self._lock_one = one.with_for_update() if self.postgres else one
        self._key_one = select(EVENTS.c.ticket_id, EVENTS.c.dedupe_key, EVENTS.c.id).where(
            EVENTS.c.dedupe_key == bindparam("key"))
        self._keys = select(EVENTS.c.ticket_id, EVENTS.c.dedupe_key, EVENTS.c.id).where(
            EVENTS.c.dedupe_key.in_(bindparam("keys", expanding=True)))
        self._score_for_event = (select(SCORES.c.response).where(SCORES.c.event_id == bindparam("event_id"))
                                 .order_by(SCORES.c.id).limit(1))
        # Highest risk first, unscored last: SQLite sorts NULL lowest, so DESC alone puts them last and the
        # queue indexes serve the order; PostgreSQL needs NULLS LAST said.
        probability = TICKETS.c.probability.desc()
        self._queue_order = (probability.nulls_last() if self.postgres else probability, TICKETS.c.ticket_id.desc())
        self._no_score = {"probability": None, "band": None, "escalate_now": None, "scored_at": None,
                          "model_version": None, "features": None, "latest_score": None}
        dialect_insert = postgresql_insert if self.postgres else sqlite_insert
        self._insert_event_once = (dialect_insert(EVENTS).on_conflict_do_nothing(
            index_elements=[EVENTS.c.ticket_id, EVENTS.c.dedupe_key]).returning(EVENTS.c.id))
        self._update_ticket = update(TICKETS).where(TICKETS.c.ticket_id == bindparam("_ticket_id"))
        self._bulk_inserts: dict[tuple, BulkInsert] = {}
        self._history_since = (select(HISTORY.c.seq, HISTORY.c.ticket_id, HISTORY.c.created_at, HISTORY.c.ended_at,
                                      HISTORY.c.escalated, HISTORY.c.customer_id, HISTORY.c.agent_id,
                                      HISTORY.c.group_name, HISTORY.c.category)
                               .where(HISTORY.c.seq > bindparam("seq")).order_by(HISTORY.c.seq)
                               .limit(bindparam("limit")))

    def _insert_many(self, connection, table, rows: list[dict]) -> None:
        """INSERT `rows` (dicts with the same keys) into `table`: one executemany (BulkInsert)."""
        if rows:
            self._bulk_insert(table, tuple(rows[0])).execute(connection, rows)

    def _bulk_insert(self, table, columns: tuple[str, ...]) -> BulkInsert:
        key = (table.name, columns)
        bulk = self._bulk_inserts.get(key)
        if bulk is None:
            bulk = self._bulk_inserts[key] = BulkInsert(table, self.engine.dialect, columns)
        return bulk

    # --- writing -------------------------------------------------------------------------
    def record_events(self, events: list[dict], source: str, received_at: datetime | None = None,
                      normalized: bool = False, event_ids: bool = True) -> list[RecordedEvent]:
        """Merge events (full or partial canonical tickets) into the store; one result per input event,
        in input order. Raises EventError (nothing written) for an event of an unknown ticket without
        created_at or one before its ticket's creation; StoreUnavailable when the store is locked/full.
        `normalized`: the events are already as normalize_event makes them (serving.ingest does that
        for a whole export at once). `event_ids=False`: a new event's RecordedEvent.event_id is None
        (bulk writers that only count, such as ingest and replay, skip reading the ids back)."""
        if not events:
            return []
        received_at = received_at or datetime.now(UTC)
        pending = [self._prepare(i, event, source, normalized) for i, event in enumerate(events)]

        def work(connection) -> list[RecordedEvent]:
            recorded, plan = self._record(connection, pending, source, received_at, event_ids)
            self._write_tickets(connection, plan, None)
            return recorded

        return self._retrying(work)

    def record_and_score(self, events: list[dict], source: str, scorer, received_at: datetime | None = None
                         ) -> tuple[list[RecordedEvent], object]:
        """record_events and the scores of the merged tickets in ONE unit of work (one commit, the
        service's request path). After the events are merged, `scorer(recorded, read_history,
        stored_score)` runs inside the transaction: `read_history(seq, limit)` is read_history_since on
        the transaction's own connection (so the new facts are visible), `stored_score(event_id)` is
        score_for_event; it returns (result, ScoresToRecord | None), and the scores are written before
        the commit. Returns (recorded events, result). Errors as record_events."""
        if not events:
            return [], None
        received_at = received_at or datetime.now(UTC)
        pending = [self._prepare(i, event, source) for i, event in enumerate(events)]

        def work(connection):
            recorded, plan = self._record(connection, pending, source, received_at)
            result, to_record = scorer(
                recorded, lambda seq, limit: self._read_history(connection, seq, limit),
                lambda event_id: connection.execute(self._score_for_event, {"event_id": event_id}).scalar())
            self._write_tickets(connection, plan, to_record)
            return recorded, result

        return self._retrying(work)

    def record_scores(self, scores: list[dict], model_version: str, scored_at: datetime,
                      event_ids: list[int | None] | None = None, features: list[dict | None] | None = None) -> None:
        """Record scores (score_states' response dicts) and make each its ticket's latest score.

        `event_ids`: the event each score answered (None for a re-score); `features`: the feature
        values that produced each score (kept with the ticket's latest score only)."""
        if not scores:
            return
        batch = ScoresToRecord(scores, model_version, scored_at, event_ids, features)

        def work(connection) -> None:
            rows, latest = self._score_rows(batch)
            self._insert_many(connection, SCORES, rows)
            connection.execute(self._update_ticket, [{"_ticket_id": ticket_id, **values}
                                                     for ticket_id, values in latest.items()])

        self._retrying(work)

    @staticmethod
    def _score_rows(batch: ScoresToRecord) -> tuple[list[dict], dict[str, dict]]:
        """The ticket_scores rows, and each ticket's latest-score columns of the tickets table."""
        scored_at = utc(batch.scored_at)
        event_ids = batch.event_ids or [None] * len(batch.scores)
        features = batch.features or [None] * len(batch.scores)
        rows, latest = [], {}
        for score, event_id, values in zip(batch.scores, event_ids, features, strict=True):
            escalation = score["escalation"]
            row = {"ticket_id": score["ticket_id"], "event_id": event_id, "scored_at": scored_at,
                   "model_version": batch.model_version, "probability": float(escalation["probability"]),
                   "band": escalation["band"], "escalate_now": bool(escalation["escalate_now"]), "response": score}
            rows.append(row)
            latest[row["ticket_id"]] = {"probability": row["probability"], "band": row["band"],
                                        "escalate_now": row["escalate_now"], "scored_at": scored_at,
                                        "model_version": batch.model_version, "features": values,
                                        "latest_score": latest_score_record(score, "request")}
        return rows, latest

    def _retrying(self, work):
        """Run `work(connection)` as one unit of work (one transaction, committed on return); retry a
        collision, map lock/full to StoreUnavailable. A Core connection, not an ORM Session: the work is
        Core statements, and a Session's bookkeeping measured as much CPU as the statements themselves."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.write.begin() as connection:
                    return work(connection)
            except IntegrityError:
                # Another instance inserted the same new ticket or delivery first: merge again on top of it.
                if attempt == MAX_ATTEMPTS - 1:
                    raise
            except DBAPIError as exc:
                reason = unavailable_reason(exc)
                if reason is None:
                    raise
                if "conflicting" in str(reason) and attempt < MAX_ATTEMPTS - 1:
                    continue
                raise reason from exc
        raise AssertionError("unreachable")

    def _prepare(self, index: int, event: dict, source: str, normalized: bool = False) -> _Pending:
        if normalized:
            source_event_id = event.pop("source_event_id", None)
            key = (hashlib.sha256(b"content\x00" + orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
                   if source_event_id in (None, "") else dedupe_key(event, source, source_event_id))  # dedupe_key inlined
            return _Pending(index, event, datetime.fromisoformat(event["event_time"]), key, source_event_id)
        problems = []
        if event.get("ticket_id") in (None, ""):
            problems.append((index, "ticket_id", "required field is missing"))
        if event.get("event_time") in (None, ""):
            problems.append((index, "event_time", "required field is missing"))
        if problems:
            raise EventError(problems)
        try:
            normal = normalize_event(event)
        except (TypeError, ValueError) as exc:
            raise EventError([(index, "event_time", f"unusable time: {exc}")]) from exc
        source_event_id = event.get("source_event_id")
        return _Pending(index, normal, parse_time(normal["event_time"]), dedupe_key(normal, source, source_event_id),
                        None if source_event_id in (None, "") else str(source_event_id)[:255])

    def _record(self, connection, pending: list[_Pending], source: str, received_at: datetime,
                event_ids: bool = True) -> tuple[list[RecordedEvent], dict]:
        """Merge the events; insert them and the changed history facts. The tickets rows are written
        by _write_tickets (after scoring, on the request path) from the returned plan."""
        by_ticket: dict[str, list[_Pending]] = {}
        for item in pending:
            by_ticket.setdefault(item.event["ticket_id"], []).append(item)
        ticket_ids = sorted(by_ticket)  # one lock order for every writer
        rows = self._lock_tickets(connection, ticket_ids)
        single = len(pending) == 1
        # A ticket not in the store has no events there yet (a ticket's row and events are written in one unit).
        seen = {} if single else self._existing_keys(connection, [p.key for p in pending if p.event["ticket_id"] in rows])

        problems: list[tuple[int, str, str]] = []
        results: dict[int, tuple[str, bool, object]] = {}
        new_events: list[_Pending] = []
        states: dict[str, tuple[dict | None, dict | None, bool, int]] = {}
        for ticket_id in ticket_ids:
            merged = self._merge_ticket(ticket_id, by_ticket[ticket_id], rows.get(ticket_id), seen)
            problems += merged.problems
            results.update(merged.results)
            new_events += merged.new
            states[ticket_id] = (merged.state, merged.facts, merged.replay, len(merged.new))
        if problems:
            raise EventError(sorted(problems))

        if single and new_events:
            # One event (the request path): the unique index tells a duplicate, no lookup first.
            item = new_events[0]
            values = {name: column.value if isinstance(column, Repeat) else column[0]  # the statement binds them
                      for name, column in self._event_columns(new_events, source, received_at).items()}
            event_id = connection.execute(self._insert_event_once, values).scalar()
            if event_id is None:  # the same delivery was recorded before: nothing changes
                event_id = connection.execute(self._key_one, {"key": item.key}).one().id
                state = rows[item.event["ticket_id"]]["state"] if item.event["ticket_id"] in rows else None
                if state is None:
                    raise IntegrityError("duplicate event of a ticket not yet visible", None, Exception())
                results[item.index] = (item.event["ticket_id"], True, event_id)
                states = {t: (None, None, False, 0) for t in states}
                new_events = []
            else:
                results[item.index] = (item.event["ticket_id"], False, event_id)
        elif new_events:
            # A plain executemany, then the ids by key: RETURNING in parameter order would insert row by row.
            columns = self._event_columns(new_events, source, received_at)
            self._bulk_insert(EVENTS, EVENT_COLUMNS).execute_columns(connection, columns, len(new_events))
            if event_ids:
                ids = self._existing_keys(connection, columns["dedupe_key"])
                for item in new_events:
                    key = (item.event["ticket_id"], item.key)
                    results[item.index] = (item.event["ticket_id"], False, ids.get(key))
                    seen[key] = ids.get(key)
        for ticket_id, (_state, _facts, replay, added) in list(states.items()):
            if replay:
                states[ticket_id] = (*self._replay(connection, ticket_id), replay, added)
        history = []
        for ticket_id, (_state, facts, _replay, added) in states.items():
            if not added:
                continue
            row = rows.get(ticket_id)
            facts_now = history_fields(facts)
            if row is None or history_fields(row["history"]) != facts_now:
                history.append({"ticket_id": ticket_id, "created_at": parse_time(facts_now["created_at"]),
                                "ended_at": parse_time(facts_now["ended_at"]), "escalated": facts_now["escalated"],
                                "customer_id": facts_now["customer_id"], "agent_id": facts_now["agent_id"],
                                "group_name": facts_now["group"], "category": facts_now["category"]})
        if history:
            self._insert_many(connection, HISTORY, history)
        recorded = []
        for index in range(len(pending)):  # every input event has its result (or raised above)
            ticket_id, duplicate, ref = results[index]
            state = states[ticket_id][0] if states[ticket_id][0] is not None else rows[ticket_id]["state"]
            event_id = seen[ref] if isinstance(ref, tuple) else ref
            recorded.append(RecordedEvent(ticket_id, state, duplicate, event_id, index))
        return recorded, {"rows": rows, "states": states, "received_at": received_at}

    def _merge_ticket(self, ticket_id: str, items: list[_Pending], row: dict | None, seen: dict) -> _Merged:
        """One ticket's events merged in event-time order onto its stored `row` (None: not in the store):
        which are new, which duplicates (`seen`: (ticket_id, key) of stored events; this ticket's new
        keys are added to it), which refused, and the state and history facts after them."""
        merged = _Merged(seen=seen)
        state, facts = (row["state"], row["history"]) if row else (None, None)
        replay = False
        stored_created = parse_time(state["created_at"]) if state else None
        latest = parse_time(state["event_time"]) if state else None
        created_text, created_sent = None, None
        for item in sorted(items, key=EVENT_TIME) if len(items) > 1 else items:
            key = (ticket_id, item.key)
            if key in seen:
                merged.results[item.index] = (ticket_id, True, key)
                continue
            sent_created = item.event.get("created_at")
            if sent_created and sent_created != created_text:  # a ticket's events mostly repeat it
                created_text, created_sent = sent_created, parse_time(sent_created)
            if not sent_created and stored_created is None:
                merged.problems.append((item.index, "created_at", f"ticket {ticket_id!r} is not in the store yet: "
                                        "its first event must carry created_at"))
                continue
            # Neither the creation time the event carries nor the one stored may be after the event.
            created = max(t for t in (created_sent if sent_created else None, stored_created) if t is not None)
            if item.event_time < created:
                stored = " (as stored)" if created is stored_created and created != created_sent else ""
                merged.problems.append((item.index, "event_time", f"event_time {iso(item.event_time)} is before the "
                                        f"ticket's created_at {iso(created)}{stored}"))
                continue
            seen[key] = None  # a repeat inside this batch is a duplicate of this one
            merged.results[item.index] = (ticket_id, False, None)
            merged.new.append(item)
            if latest is not None and item.event_time < latest:
                replay = True
                continue
            if not replay:
                state = merge_event(state, item.event, self.closed_statuses)
                facts = update_facts(facts, state, self.closed_statuses)
                latest = item.event_time
                stored_created = stored_created or created
        merged.state, merged.facts, merged.replay = state, facts, replay
        return merged

    @staticmethod
    def _event_columns(items: list[_Pending], source: str, received_at: datetime) -> dict[str, list | Repeat]:
        """The ticket_events rows of new events, column by column."""
        events = [item.event for item in items]
        partial = [bool(event.get("partial")) for event in events]
        return {"ticket_id": [event["ticket_id"] for event in events], "source": Repeat(source),
                "source_event_id": [item.source_event_id for item in items],
                "dedupe_key": [item.key for item in items], "received_at": Repeat(received_at),
                "partial": partial if any(partial) else Repeat(False),
                "event_time": [item.event_time for item in items], "fields": events,
                "has_text": [any(map(event.get, EVENT_TEXT_FIELDS)) for event in events]}

    def _lock_tickets(self, connection, ticket_ids: list[str]) -> dict[str, dict]:
        rows = {}
        if len(ticket_ids) == 1:  # the request path: no expanding IN list to render
            for row in connection.execute(self._lock_one, {"id": ticket_ids[0]}).mappings():
                rows[row["ticket_id"]] = dict(row)
            return rows
        for start in range(0, len(ticket_ids), CHUNK):
            for row in connection.execute(self._lock, {"ids": ticket_ids[start:start + CHUNK]}).mappings():
                rows[row["ticket_id"]] = dict(row)
        return rows

    def _existing_keys(self, connection, keys: list[str]) -> dict[tuple, int | None]:
        seen: dict[tuple, int | None] = {}
        unique_keys = sorted(set(keys))
        for start in range(0, len(unique_keys), CHUNK):
            for ticket_id, key, event_id in connection.execute(self._keys, {"keys": unique_keys[start:start + CHUNK]}):
                seen[(ticket_id, key)] = event_id
        return seen

    def _replay(self, connection, ticket_id: str) -> tuple[dict, dict]:
        """The ticket's state and history facts from all its events, merged in event-time order."""
        state, facts = None, None
        query = (select(EVENTS.c.fields).where(EVENTS.c.ticket_id == ticket_id)
                 .order_by(EVENTS.c.event_time, EVENTS.c.id))
        for (fields,) in connection.execute(query):
            state = merge_event(state, fields, self.closed_statuses)
            facts = update_facts(facts, state, self.closed_statuses)
        return state, facts

    def _write_tickets(self, connection, plan: dict, scores: ScoresToRecord | None) -> None:
        """Each changed ticket's row (state, queue columns and, when scored, its latest score) in one
        statement per kind; then the score rows."""
        rows, states, received_at = plan["rows"], plan["states"], plan["received_at"]
        score_rows, latest = self._score_rows(scores) if scores is not None else ([], {})
        inserts, updates = [], []
        for ticket_id, (state, facts, _replay, added) in states.items():
            if not added:
                continue
            row = rows.get(ticket_id)
            values = {
                "created_at": parse_time(state["created_at"]),
                "last_event_time": parse_time(state["event_time"]), "updated_at": received_at,
                "status": state.get("status"), "is_open": not is_closed(state.get("status"), self.closed_statuses),
                "customer_id": state.get("customer_id"), "agent_id": state.get("agent_id"),
                "group_name": state.get("group"), "category": state.get("category"),
                "state": state, "history": facts, "event_count": (row["event_count"] if row else 0) + added,
                "text_dropped_at": None, **(latest.pop(ticket_id, None) or self._no_score),
            }
            if row is None:
                inserts.append({"ticket_id": ticket_id, **values})
            else:
                if values["probability"] is None:  # not scored in this unit: keep its latest score
                    values = {k: v for k, v in values.items() if k not in self._no_score}
                updates.append({"_ticket_id": ticket_id, **values})
        if inserts:
            self._insert_many(connection, TICKETS, inserts)
        by_columns: dict[tuple, list[dict]] = {}
        for values in updates:  # scored and unscored rows set different columns: one executemany each
            by_columns.setdefault(tuple(values), []).append(values)
        for group in by_columns.values():
            connection.execute(self._update_ticket, group if len(group) > 1 else group[0])
        if latest:  # scores of tickets this unit did not change (duplicates answered afresh)
            connection.execute(self._update_ticket, [{"_ticket_id": t, **v} for t, v in latest.items()])
        if score_rows:
            self._insert_many(connection, SCORES, score_rows)

    # --- reading -------------------------------------------------------------------------
    def get_ticket(self, ticket_id: str, timeline_limit: int = 200) -> dict | None:
        """The ticket's state, latest score and timeline (events and the scores answered to requests,
        oldest first, the latest `timeline_limit` of each); None when unknown.

        The latest score is the tickets row's (the one GET /v1/queue orders by), whoever gave it: a
        request or the queue watcher (`source`), with `scored_at`, `model`, `reasons` when they were
        computed (`reasons_computed`) and `features`, the feature values that produced it (None when
        that score did not keep them: a watcher re-score below the alert line)."""
        with Session(self.engine) as session:
            row = session.execute(select(TicketRow).where(TicketRow.ticket_id == ticket_id)).scalar_one_or_none()
            if row is None:
                return None
            events = session.execute(
                select(TicketEventRow).where(TicketEventRow.ticket_id == ticket_id)
                .order_by(TicketEventRow.event_time.desc(), TicketEventRow.id.desc()).limit(timeline_limit)
            ).scalars().all()
            scores = session.execute(
                select(ScoreRow).where(ScoreRow.ticket_id == ticket_id)
                .order_by(ScoreRow.scored_at.desc(), ScoreRow.id.desc()).limit(timeline_limit)
            ).scalars().all()
        timeline = [{"kind": "event", "time": iso(e.event_time), "event_id": e.id, "source": e.source,
                     "source_event_id": e.source_event_id, "received_at": iso(e.received_at),
                     "partial": e.partial, "fields": e.fields} for e in events]
        timeline += [{"kind": "score", "time": iso(s.scored_at), "score_id": s.id, "event_id": s.event_id,
                      "model_version": s.model_version, "probability": s.probability, "band": s.band,
                      "escalate_now": s.escalate_now, "reasons": s.response.get("escalation", {}).get("reasons"),
                      "action": s.response.get("action")} for s in scores]
        timeline.sort(key=lambda item: (item["time"], item["kind"] == "score"))
        return {
            "ticket_id": row.ticket_id,
            "state": row.state,
            "open": row.is_open,
            "events": row.event_count,
            "updated_at": iso(row.updated_at),
            "text_dropped_at": iso(row.text_dropped_at),
            "latest_score": stored_latest_score(row, scores[0] if scores else None),
            "timeline": timeline,
        }

    def score_for_event(self, event_id: int) -> dict | None:
        """The score answered to an event (a duplicate delivery gets the same answer), if any."""
        with self.engine.connect() as connection:
            return connection.execute(self._score_for_event, {"event_id": event_id}).scalar()

    def list_queue(self, limit: int = 50, offset: int = 0, band: str | None = None, group: str | None = None,
                   agent_id: str | None = None, category: str | None = None, detail: bool = False) -> dict:
        """Open tickets by current risk, highest first (unscored last), filtered and paged.

        Returns {"tickets": [...], "total": n matching, "limit", "offset"}. `detail`: each ticket also
        has the rest of its latest score (`latest_score`, as get_ticket gives it, without features)."""
        conditions = [TicketRow.is_open.is_(True)]
        for column, value in ((TicketRow.band, band), (TicketRow.group_name, group),
                              (TicketRow.agent_id, agent_id), (TicketRow.category, category)):
            if value is not None:
                conditions.append(column == value)
        where = and_(*conditions)
        columns = (TicketRow.ticket_id, TicketRow.probability, TicketRow.band, TicketRow.escalate_now,
                   TicketRow.scored_at, TicketRow.status, TicketRow.group_name, TicketRow.agent_id,
                   TicketRow.category, TicketRow.customer_id, TicketRow.created_at, TicketRow.last_event_time)
        if detail:
            columns += (TicketRow.latest_score, TicketRow.model_version)
        with Session(self.engine) as session:
            rows = session.execute(
                select(*columns).where(where)
                .order_by(*self._queue_order).limit(limit).offset(offset)
            ).all()
            total = session.execute(select(func.count()).select_from(TicketRow).where(where)).scalar_one()
        tickets = [{"ticket_id": r.ticket_id, "probability": r.probability, "band": r.band,
                    "escalate_now": r.escalate_now, "scored_at": iso(r.scored_at), "status": r.status,
                    "group": r.group_name, "agent_id": r.agent_id, "category": r.category,
                    "customer_id": r.customer_id, "created_at": iso(r.created_at),
                    "last_event_time": iso(r.last_event_time)} for r in rows]
        if detail:
            legacy = [t["ticket_id"] for t, r in zip(tickets, rows, strict=True)
                      if r.latest_score is None and r.probability is not None]
            logged = self._latest_logged_scores(legacy)
            for ticket, r in zip(tickets, rows, strict=True):
                score = stored_latest_score(r, logged.get(r.ticket_id))
                if score is not None:
                    score.pop("features", None)
                ticket["latest_score"] = score
        return {"tickets": tickets, "total": total, "limit": limit, "offset": offset}

    def _latest_logged_scores(self, ticket_ids: list[str]) -> dict[str, ScoreRow]:
        """Each ticket's latest ticket_scores row (for rows scored before tickets.latest_score existed)."""
        out: dict[str, ScoreRow] = {}
        if not ticket_ids:
            return out
        with Session(self.engine) as session:
            for start in range(0, len(ticket_ids), CHUNK):
                for score in session.execute(
                        select(ScoreRow).where(ScoreRow.ticket_id.in_(ticket_ids[start:start + CHUNK]))
                        .order_by(ScoreRow.ticket_id, ScoreRow.scored_at, ScoreRow.id)).scalars():
                    out[score.ticket_id] = score
        return out

    def iter_open_tickets(self, batch_size: int = 1000) -> Iterator[list[dict]]:
        """The canonical states of open tickets, in ticket-id order, `batch_size` at a time (for the watcher)."""
        after = ""
        query = (select(TICKETS.c.ticket_id, TICKETS.c.state)
                 .where(TICKETS.c.is_open.is_(True), TICKETS.c.ticket_id > bindparam("after"))
                 .order_by(TICKETS.c.ticket_id).limit(bindparam("limit")))
        while True:
            with self.engine.connect() as connection:  # Core: no ORM bookkeeping for 100,000 rows a tick
                batch = connection.execute(query, {"after": after, "limit": batch_size}).all()
            if not batch:
                return
            yield [state for _, state in batch]
            after = batch[-1][0]

    def read_history_since(self, seq: int, limit: int = 50_000) -> list[dict]:
        """History-log rows with seq > `seq`, oldest first (at most `limit`): what the live history
        index of each service process has not applied yet."""
        with self.engine.connect() as connection:
            return self._read_history(connection, seq, limit)

    def _read_history(self, connection, seq: int, limit: int) -> list[dict]:
        rows = connection.execute(self._history_since, {"seq": seq, "limit": limit}).all()
        return [{"seq": r.seq, "ticket_id": r.ticket_id, "created_at": utc(r.created_at), "ended_at": utc(r.ended_at),
                 "escalated": bool(r.escalated), "customer_id": r.customer_id, "agent_id": r.agent_id,
                 "group": r.group_name, "category": r.category} for r in rows]

    def count_events(self) -> int:
        with Session(self.engine) as session:
            return session.execute(select(func.count()).select_from(TicketEventRow)).scalar_one()

    # --- retention -----------------------------------------------------------------------
    def purge_text(self, before: datetime, batch_size: int = 1000) -> dict:
        """Drop ticket text (subject, description, messages) of events before `before` and of tickets
        whose latest event is before it; ids, counters, times and scores stay. Returns counts."""
        before = utc(before)
        counts = {"events": 0, "tickets": 0}
        while True:
            def work(connection) -> int:
                events = connection.execute(
                    select(TicketEventRow.id, TicketEventRow.fields)
                    .where(TicketEventRow.has_text.is_(True), TicketEventRow.event_time < before).limit(batch_size)
                ).all()
                if events:
                    connection.execute(update(EVENTS).where(EVENTS.c.id == bindparam("_id")), [
                        {"_id": event_id, "fields": drop_text(fields), "has_text": False}
                        for event_id, fields in events])
                return len(events)

            n = self._retrying(work)
            counts["events"] += n
            if n < batch_size:
                break
        now = datetime.now(UTC)
        while True:
            def work(connection) -> int:
                tickets = connection.execute(
                    select(TicketRow.ticket_id, TicketRow.state)
                    .where(TicketRow.text_dropped_at.is_(None), TicketRow.last_event_time < before).limit(batch_size)
                ).all()
                if tickets:
                    connection.execute(self._update_ticket, [
                        {"_ticket_id": ticket_id, "state": {k: v for k, v in state.items() if k not in TEXT_FIELDS},
                         "text_dropped_at": now} for ticket_id, state in tickets])
                return len(tickets)

            n = self._retrying(work)
            counts["tickets"] += n
            if n < batch_size:
                break
        return counts

    def purge_expired_text(self, retention_days: float, now: datetime | None = None) -> dict:
        """purge_text of everything older than the retention period (Settings.text_retention_days)."""
        return self.purge_text((now or datetime.now(UTC)) - timedelta(days=retention_days))


__all__ = ["EventError", "RecordedEvent", "ScoresToRecord", "StoreUnavailable", "TicketStore"]
