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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Engine, and_, func, insert, select, update
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
    update_facts,
)
from serving.store.tables import HistoryRow, ScoreRow, TicketEventRow, TicketRow

EVENT_KEYS = frozenset((*STATE_FIELDS, "customer_message", "agent_message"))
CHUNK = 500  # ids per IN (...) list
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


def dedupe_key(event: dict, source: str, source_event_id: object) -> str:
    """The idempotency key: the source's event id when given, else the ticket, time and content."""
    if source_event_id not in (None, ""):
        raw = b"id\x00" + source.encode() + b"\x00" + str(source_event_id).encode()
    else:
        raw = b"content\x00" + orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


@dataclass
class _Pending:
    index: int
    event: dict  # normalized
    event_time: datetime
    key: str
    source_event_id: str | None


class TicketStore:
    """The store's units of work on an engine (serving.store.db.create_store_engine)."""

    def __init__(self, engine: Engine, closed_statuses: Iterable[str] = ("closed",)):
        self.engine = engine
        self.write = write_engine(engine)
        self.closed_statuses = frozenset(str(s).strip().lower() for s in closed_statuses)
        self.postgres = engine.dialect.name == "postgresql"

    # --- writing -------------------------------------------------------------------------
    def record_events(self, events: list[dict], source: str, received_at: datetime | None = None
                      ) -> list[RecordedEvent]:
        """Merge events (full or partial canonical tickets) into the store; one result per input event,
        in input order. Raises EventError (nothing written) for an event of an unknown ticket without
        created_at or one before its ticket's creation; StoreUnavailable when the store is locked/full."""
        if not events:
            return []
        received_at = received_at or datetime.now(UTC)
        pending = [self._prepare(i, event, source) for i, event in enumerate(events)]
        return self._retrying(lambda session: self._record(session, pending, source, received_at))

    def record_scores(self, scores: list[dict], model_version: str, scored_at: datetime,
                      event_ids: list[int | None] | None = None, features: list[dict | None] | None = None) -> None:
        """Record scores (score_states' response dicts) and make each its ticket's latest score.

        `event_ids`: the event each score answered (None for a re-score); `features`: the feature
        values that produced each score (kept with the ticket's latest score only)."""
        if not scores:
            return
        scored_at = utc(scored_at)
        event_ids = event_ids or [None] * len(scores)
        features = features or [None] * len(scores)
        rows = [{"ticket_id": s["ticket_id"], "event_id": e, "scored_at": scored_at, "model_version": model_version,
                 "probability": float(s["escalation"]["probability"]), "band": s["escalation"]["band"],
                 "escalate_now": bool(s["escalation"]["escalate_now"]), "response": s}
                for s, e in zip(scores, event_ids, strict=True)]
        latest = {}
        for row, values in zip(rows, features, strict=True):
            latest[row["ticket_id"]] = (row, values)

        def work(session: Session) -> None:
            session.execute(insert(ScoreRow), rows)
            for ticket_id, (row, values) in latest.items():
                session.execute(update(TicketRow).where(TicketRow.ticket_id == ticket_id).values(
                    probability=row["probability"], band=row["band"], escalate_now=row["escalate_now"],
                    scored_at=scored_at, model_version=model_version,
                    **({"features": values} if values is not None else {})))

        self._retrying(work)

    def _retrying(self, work):
        """Run `work(session)` in one transaction; retry a collision, map lock/full to StoreUnavailable."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                with Session(self.write, expire_on_commit=False) as session, session.begin():
                    return work(session)
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

    def _prepare(self, index: int, event: dict, source: str) -> _Pending:
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

    def _record(self, session: Session, pending: list[_Pending], source: str, received_at: datetime
                ) -> list[RecordedEvent]:
        by_ticket: dict[str, list[_Pending]] = {}
        for item in pending:
            by_ticket.setdefault(item.event["ticket_id"], []).append(item)
        ticket_ids = sorted(by_ticket)  # one lock order for every writer
        rows = self._lock_tickets(session, ticket_ids)
        seen = self._existing_keys(session, ticket_ids, [p.key for p in pending])

        problems: list[tuple[int, str, str]] = []
        results: dict[int, tuple[str, bool, int | None]] = {}
        new_events: list[tuple[_Pending, dict]] = []
        states: dict[str, tuple[dict | None, dict | None, bool, int]] = {}
        for ticket_id in ticket_ids:
            row = rows.get(ticket_id)
            state, facts = (row["state"], row["history"]) if row else (None, None)
            replay = False
            added = 0
            for item in sorted(by_ticket[ticket_id], key=lambda p: p.event_time):
                key = (ticket_id, item.key)
                if key in seen:
                    results[item.index] = (ticket_id, True, key)
                    continue
                created = parse_time(item.event.get("created_at") or (state or {}).get("created_at"))
                if created is None:
                    problems.append((item.index, "created_at", f"ticket {ticket_id!r} is not in the store yet: its "
                                     "first event must carry created_at"))
                    continue
                if item.event_time < created:
                    problems.append((item.index, "event_time", f"event_time {iso(item.event_time)} is before the "
                                     f"ticket's created_at {iso(created)}"))
                    continue
                seen[key] = None  # a repeat inside this batch is a duplicate of this one
                results[item.index] = (ticket_id, False, None)
                new_events.append((item, {"ticket_id": ticket_id, "source": source,
                                          "source_event_id": item.source_event_id, "dedupe_key": item.key,
                                          "event_time": item.event_time, "received_at": received_at,
                                          "partial": bool(item.event.get("partial")), "fields": item.event,
                                          "has_text": any(item.event.get(f) for f in EVENT_TEXT_FIELDS)}))
                added += 1
                if state is not None and item.event_time < parse_time(state["event_time"]):
                    replay = True
                    continue
                if not replay:
                    state = merge_event(state, item.event, self.closed_statuses)
                    facts = update_facts(facts, state, self.closed_statuses)
            states[ticket_id] = (state, facts, replay, added)
        if problems:
            raise EventError(sorted(problems))

        # New tickets first (events refer to them); existing ones after a possible replay.
        self._write_tickets(session, rows, {t: v for t, v in states.items() if t not in rows}, received_at)
        if new_events:
            ids = session.execute(insert(TicketEventRow).returning(TicketEventRow.id, sort_by_parameter_order=True),
                                  [values for _, values in new_events]).scalars().all()
            for (item, _), event_id in zip(new_events, ids, strict=True):
                results[item.index] = (item.event["ticket_id"], False, event_id)
                seen[(item.event["ticket_id"], item.key)] = event_id
        for ticket_id, (_state, _facts, replay, added) in list(states.items()):
            if replay:
                states[ticket_id] = (*self._replay(session, ticket_id), replay, added)
        self._write_tickets(session, rows, {t: v for t, v in states.items() if t in rows}, received_at)
        return [RecordedEvent(ticket_id, states[ticket_id][0] if states[ticket_id][0] is not None
                              else rows[ticket_id]["state"], duplicate, seen[event_id] if duplicate else event_id, index)
                for index, (ticket_id, duplicate, event_id) in sorted(results.items())]

    def _lock_tickets(self, session: Session, ticket_ids: list[str]) -> dict[str, dict]:
        rows = {}
        columns = (TicketRow.ticket_id, TicketRow.state, TicketRow.history, TicketRow.event_count)
        for start in range(0, len(ticket_ids), CHUNK):
            query = select(*columns).where(TicketRow.ticket_id.in_(ticket_ids[start:start + CHUNK]))
            if self.postgres:
                query = query.order_by(TicketRow.ticket_id).with_for_update()
            for row in session.execute(query).mappings():
                rows[row["ticket_id"]] = dict(row)
        return rows

    def _existing_keys(self, session: Session, ticket_ids: list[str], keys: list[str]) -> dict[tuple, int | None]:
        seen: dict[tuple, int | None] = {}
        unique_keys = sorted(set(keys))
        for start in range(0, len(unique_keys), CHUNK):
            query = select(TicketEventRow.ticket_id, TicketEventRow.dedupe_key, TicketEventRow.id).where(
                TicketEventRow.dedupe_key.in_(unique_keys[start:start + CHUNK]))
            for ticket_id, key, event_id in session.execute(query):
                seen[(ticket_id, key)] = event_id
        return seen

    def _replay(self, session: Session, ticket_id: str) -> tuple[dict, dict]:
        """The ticket's state and history facts from all its events, merged in event-time order."""
        state, facts = None, None
        query = (select(TicketEventRow.fields).where(TicketEventRow.ticket_id == ticket_id)
                 .order_by(TicketEventRow.event_time, TicketEventRow.id))
        for (fields,) in session.execute(query):
            state = merge_event(state, fields, self.closed_statuses)
            facts = update_facts(facts, state, self.closed_statuses)
        return state, facts

    def _write_tickets(self, session: Session, rows: dict, states: dict, received_at: datetime) -> None:
        inserts, updates, history = [], [], []
        for ticket_id, (state, facts, _replay, added) in states.items():
            if not added:
                continue
            row = rows.get(ticket_id)
            values = {
                "ticket_id": ticket_id, "created_at": parse_time(state["created_at"]),
                "last_event_time": parse_time(state["event_time"]), "updated_at": received_at,
                "status": state.get("status"), "is_open": not is_closed(state.get("status"), self.closed_statuses),
                "customer_id": state.get("customer_id"), "agent_id": state.get("agent_id"),
                "group_name": state.get("group"), "category": state.get("category"),
                "state": state, "history": facts, "event_count": (row["event_count"] if row else 0) + added,
                "text_dropped_at": None,
            }
            (updates if row else inserts).append(values)
            facts_now = history_fields(facts)
            if row is None or history_fields(row["history"]) != facts_now:
                history.append({"ticket_id": ticket_id, "created_at": parse_time(facts_now["created_at"]),
                                "ended_at": parse_time(facts_now["ended_at"]), "escalated": facts_now["escalated"],
                                "customer_id": facts_now["customer_id"], "agent_id": facts_now["agent_id"],
                                "group_name": facts_now["group"], "category": facts_now["category"]})
        if inserts:
            session.execute(insert(TicketRow), inserts)
        if updates:
            session.execute(update(TicketRow), updates)  # bulk UPDATE by primary key
        if history:
            session.execute(insert(HistoryRow), history)

    # --- reading -------------------------------------------------------------------------
    def get_ticket(self, ticket_id: str, timeline_limit: int = 200) -> dict | None:
        """The ticket's state, latest score (with the feature values that produced it) and timeline
        (events and scores, oldest first, the latest `timeline_limit` of each); None when unknown."""
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
        latest = scores[0] if scores else None
        return {
            "ticket_id": row.ticket_id,
            "state": row.state,
            "open": row.is_open,
            "events": row.event_count,
            "updated_at": iso(row.updated_at),
            "text_dropped_at": iso(row.text_dropped_at),
            "latest_score": None if latest is None else {**latest.response, "features": row.features},
            "timeline": timeline,
        }

    def score_for_event(self, event_id: int) -> dict | None:
        """The score answered to an event (a duplicate delivery gets the same answer), if any."""
        with Session(self.engine) as session:
            response = session.execute(select(ScoreRow.response).where(ScoreRow.event_id == event_id)
                                       .order_by(ScoreRow.id).limit(1)).scalar_one_or_none()
        return response

    def list_queue(self, limit: int = 50, offset: int = 0, band: str | None = None, group: str | None = None,
                   agent_id: str | None = None, category: str | None = None) -> dict:
        """Open tickets by current risk, highest first (unscored last), filtered and paged.

        Returns {"tickets": [...], "total": n matching, "limit", "offset"}."""
        conditions = [TicketRow.is_open.is_(True)]
        for column, value in ((TicketRow.band, band), (TicketRow.group_name, group),
                              (TicketRow.agent_id, agent_id), (TicketRow.category, category)):
            if value is not None:
                conditions.append(column == value)
        where = and_(*conditions)
        columns = (TicketRow.ticket_id, TicketRow.probability, TicketRow.band, TicketRow.escalate_now,
                   TicketRow.scored_at, TicketRow.status, TicketRow.group_name, TicketRow.agent_id,
                   TicketRow.category, TicketRow.customer_id, TicketRow.created_at, TicketRow.last_event_time)
        with Session(self.engine) as session:
            rows = session.execute(
                select(*columns).where(where)
                .order_by(TicketRow.probability.desc().nulls_last(), TicketRow.ticket_id).limit(limit).offset(offset)
            ).all()
            total = session.execute(select(func.count()).select_from(TicketRow).where(where)).scalar_one()
        tickets = [{"ticket_id": r.ticket_id, "probability": r.probability, "band": r.band,
                    "escalate_now": r.escalate_now, "scored_at": iso(r.scored_at), "status": r.status,
                    "group": r.group_name, "agent_id": r.agent_id, "category": r.category,
                    "customer_id": r.customer_id, "created_at": iso(r.created_at),
                    "last_event_time": iso(r.last_event_time)} for r in rows]
        return {"tickets": tickets, "total": total, "limit": limit, "offset": offset}

    def iter_open_tickets(self, batch_size: int = 1000) -> Iterator[list[dict]]:
        """The canonical states of open tickets, in ticket-id order, `batch_size` at a time (for the watcher)."""
        after = ""
        while True:
            with Session(self.engine) as session:
                batch = session.execute(
                    select(TicketRow.ticket_id, TicketRow.state)
                    .where(TicketRow.is_open.is_(True), TicketRow.ticket_id > after)
                    .order_by(TicketRow.ticket_id).limit(batch_size)
                ).all()
            if not batch:
                return
            yield [state for _, state in batch]
            if len(batch) < batch_size:
                return
            after = batch[-1][0]

    def read_history_since(self, seq: int, limit: int = 50_000) -> list[dict]:
        """History-log rows with seq > `seq`, oldest first (at most `limit`): what the live history
        index of each service process has not applied yet."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(HistoryRow.seq, HistoryRow.ticket_id, HistoryRow.created_at, HistoryRow.ended_at,
                       HistoryRow.escalated, HistoryRow.customer_id, HistoryRow.agent_id, HistoryRow.group_name,
                       HistoryRow.category).where(HistoryRow.seq > seq).order_by(HistoryRow.seq).limit(limit)
            ).all()
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
            def work(session: Session) -> int:
                events = session.execute(
                    select(TicketEventRow.id, TicketEventRow.fields)
                    .where(TicketEventRow.has_text.is_(True), TicketEventRow.event_time < before).limit(batch_size)
                ).all()
                if events:
                    session.execute(update(TicketEventRow), [
                        {"id": event_id, "fields": drop_text(fields), "has_text": False} for event_id, fields in events])
                return len(events)

            n = self._retrying(work)
            counts["events"] += n
            if n < batch_size:
                break
        now = datetime.now(UTC)
        while True:
            def work(session: Session) -> int:
                tickets = session.execute(
                    select(TicketRow.ticket_id, TicketRow.state)
                    .where(TicketRow.text_dropped_at.is_(None), TicketRow.last_event_time < before).limit(batch_size)
                ).all()
                if tickets:
                    session.execute(update(TicketRow), [
                        {"ticket_id": ticket_id, "state": {k: v for k, v in state.items() if k not in TEXT_FIELDS},
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


__all__ = ["EventError", "RecordedEvent", "StoreUnavailable", "TicketStore"]
