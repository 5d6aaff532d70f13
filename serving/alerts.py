"""Alerts in the store: one per rise of a ticket above the line, its timeline, acknowledgement,
outcome, the delivery outbox and the one-watcher lease.

The line: a score with `escalate_now`, or band `high`. Per ticket (rise_decision):
- above the line and no unclosed alert -> a new alert (rise n+1);
- above, and the latest unclosed alert's rise has not ended -> nothing (one alert per rise);
- above again after falling below while the alert is still unacknowledged -> the same alert
  ("risen_again" on its timeline), so a score wavering around the line does not page twice;
  after an acknowledgement a new rise is new information -> a new alert;
- below the line with a rise in progress -> the rise ends ("fell_below").
The ticket's outcome closes its alerts: its escalation level rose above the level at the alert
("escalated"), or it closed without that ("closed_without_escalation").

Every change is one transaction: an alert, its "raised" event and its pending deliveries
commit together (an outbox), so a crash never loses an alert nor leaves one undelivered.
Times are timezone-aware UTC, passed in by the caller (the replay runs a simulated clock).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.delivery import DeliveryResult
from serving.destinations import Destination
from serving.store.alert_tables import AlertEventRow, AlertRow, DeliveryRow, LeaseRow
from serving.store.db import write_engine
from serving.store.tables import TicketRow
from serving.store.tickets import latest_score_record

VERDICTS = ("acting", "agree", "disagree", "already_handled")
STATUSES = ("open", "acknowledged", "closed")
WATCHER_LEASE = "watcher"


class AlertNotFound(LookupError):
    pass


class AlertConflict(ValueError):
    """The alert cannot take this change (already acknowledged, or closed)."""


@dataclass(frozen=True)
class Sighting:
    """What one watch tick saw of a ticket: its score now (None for a ticket no longer open), its
    escalation level, team, and whether it is closed or has already escalated. `reasons_computed`
    False: the score was computed without reasons; `features`: the feature values behind it, if kept."""

    ticket_id: str
    score: dict | None
    level: int = 0
    team: str | None = None
    closed: bool = False
    escalated: bool = False
    reasons_computed: bool = True
    features: dict | None = None


def line_trigger(score: dict | None) -> str | None:
    """'escalate_now' or 'band_high' when the score is above the alert line, else None."""
    if score is None:
        return None
    escalation = score["escalation"]
    if escalation["escalate_now"]:
        return "escalate_now"
    return "band_high" if escalation["band"] == "high" else None


@dataclass(frozen=True)
class ActiveAlert:
    id: int
    rise: int
    status: str
    rise_ended: bool
    level_at_raise: int


def rise_decision(above: bool, active: ActiveAlert | None) -> str | None:
    """'raise', 'risen_again', 'fell_below' or None (nothing to do): the one-alert-per-rise rule.

    `active` is the ticket's latest alert that is not closed (None when there is none)."""
    if above:
        if active is None:
            return "raise"
        if not active.rise_ended:
            return None
        return "risen_again" if active.status == "open" else "raise"
    if active is not None and not active.rise_ended:
        return "fell_below"
    return None


def utc(moment: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they are UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    moment = utc(moment)
    return None if moment is None else moment.isoformat(timespec="milliseconds")


class AlertStore:
    """Units of work on the alert tables; `destinations` are the names each new alert is queued for."""

    def __init__(self, engine: Engine, destinations: Iterable[str] = ()):
        self.engine = engine
        self.write = write_engine(engine)
        self.destinations = tuple(destinations)

    # --- the watcher's side ----------------------------------------------------------------
    def apply_sightings(self, sightings: list[Sighting], now: datetime) -> list[int]:
        """Raise, continue, end and close alerts for one batch of sightings in one transaction.

        Returns the ids of the alerts raised. A concurrent raise of the same rise (two watchers
        after a lease handover) violates (ticket_id, rise): the batch is rolled back and re-read."""
        if not sightings:
            return []
        for attempt in range(3):
            try:
                with Session(self.write) as session, session.begin():
                    return self._apply(session, sightings, now)
            except IntegrityError:
                if attempt == 2:
                    raise
        return []

    def _apply(self, session: Session, sightings: list[Sighting], now: datetime) -> list[int]:
        ids = [s.ticket_id for s in sightings]
        active: dict[str, ActiveAlert] = {}
        for row in session.execute(
            select(AlertRow.id, AlertRow.ticket_id, AlertRow.rise, AlertRow.status, AlertRow.rise_ended_at,
                   AlertRow.level_at_raise)
            .where(AlertRow.ticket_id.in_(ids), AlertRow.status != "closed").order_by(AlertRow.rise)
        ):
            active[row.ticket_id] = ActiveAlert(row.id, row.rise, row.status, row.rise_ended_at is not None,
                                                row.level_at_raise)
        to_raise: list[tuple[Sighting, str]] = []
        events: list[dict] = []
        for sighting in sightings:
            current = active.get(sighting.ticket_id)
            if current is not None and (sighting.closed or sighting.level > current.level_at_raise):
                outcome = "escalated" if sighting.level > current.level_at_raise else "closed_without_escalation"
                self._close_all(session, sighting.ticket_id, outcome, now, events)
                current = None
            if sighting.closed or sighting.escalated:
                continue
            trigger = line_trigger(sighting.score)
            decision = rise_decision(trigger is not None, current)
            if decision == "raise":
                to_raise.append((sighting, trigger))
            elif decision == "risen_again":
                session.execute(update(AlertRow).where(AlertRow.id == current.id).values(rise_ended_at=None))
                events.append(_event(current.id, "risen_again", now, _score_detail(sighting.score)))
            elif decision == "fell_below":
                session.execute(update(AlertRow).where(AlertRow.id == current.id).values(rise_ended_at=now))
                events.append(_event(current.id, "fell_below", now, _score_detail(sighting.score)))
        raised = self._raise_many(session, to_raise, now, events)
        if events:
            session.execute(insert(AlertEventRow), events)
        latest = [{"tid": s.ticket_id, "p": float(s.score["escalation"]["probability"]),
                   "b": s.score["escalation"]["band"], "e": bool(s.score["escalation"]["escalate_now"]),
                   "t": now, "v": (s.score.get("model") or {}).get("version"), "f": s.features,
                   "s": latest_score_record(s.score, "watcher", s.reasons_computed)}
                  for s in sightings if s.score is not None]
        if latest:  # the watcher's re-score is the ticket's latest score: the queue, ticket view and dashboard read it
            tickets = TicketRow.__table__
            session.connection().execute(
                update(tickets).where(tickets.c.ticket_id == bindparam("tid")).values(
                    probability=bindparam("p"), band=bindparam("b"), escalate_now=bindparam("e"),
                    scored_at=bindparam("t"), model_version=bindparam("v"), features=bindparam("f"),
                    latest_score=bindparam("s")), latest)
        return raised

    def _raise_many(self, session: Session, to_raise: list[tuple[Sighting, str]], now: datetime,
                    events: list) -> list[int]:
        """New alerts (rise n+1 of each ticket), their "raised" events and pending deliveries, a few
        statements for the whole batch (a first tick over a large queue raises thousands). Returns their ids."""
        if not to_raise:
            return []
        ids = [sighting.ticket_id for sighting, _ in to_raise]
        previous: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            previous.update(session.execute(
                select(AlertRow.ticket_id, func.max(AlertRow.rise))
                .where(AlertRow.ticket_id.in_(ids[start:start + 500])).group_by(AlertRow.ticket_id)).all())
        rows = []
        for sighting, trigger in to_raise:
            score = sighting.score
            escalation, action = score["escalation"], score["action"]
            rows.append({
                "key": uuid.uuid4().hex, "ticket_id": sighting.ticket_id,
                "rise": (previous.get(sighting.ticket_id) or 0) + 1, "trigger": trigger, "status": "open",
                "raised_at": now, "probability": float(escalation["probability"]), "band": escalation["band"],
                "escalate_now": bool(escalation["escalate_now"]), "reasons": escalation["reasons"], "action": action,
                "route_to": action.get("route_to"), "team": sighting.team,
                "due_at": now + timedelta(hours=float(action.get("respond_within") or 0)),
                "model_version": (score.get("model") or {}).get("version"), "level_at_raise": sighting.level})
        session.execute(insert(AlertRow), rows)
        keys = [row["key"] for row in rows]
        id_of: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            id_of.update(session.execute(select(AlertRow.key, AlertRow.id)
                                         .where(AlertRow.key.in_(keys[start:start + 500]))).all())
        deliveries = []
        for (sighting, trigger), row in zip(to_raise, rows, strict=True):
            alert_id = id_of[row["key"]]
            events.append(_event(alert_id, "raised", now, {**_score_detail(sighting.score), "trigger": trigger,
                                                           "action": row["action"]}))
            deliveries.extend({"alert_id": alert_id, "destination": name, "idempotency_key": f"{row['key']}:{name}",
                               "status": "pending", "attempts": 0, "rounds": 0, "created_at": now,
                               "next_attempt_at": now} for name in self.destinations)
        if deliveries:
            session.execute(insert(DeliveryRow), deliveries)
        return [id_of[key] for key in keys]

    def _close_all(self, session: Session, ticket_id: str, outcome: str, now: datetime, events: list) -> None:
        open_ids = session.execute(select(AlertRow.id).where(AlertRow.ticket_id == ticket_id,
                                                             AlertRow.status != "closed")).scalars().all()
        session.execute(update(AlertRow).where(AlertRow.id.in_(open_ids)).values(
            status="closed", outcome=outcome, closed_at=now, rise_ended_at=func.coalesce(AlertRow.rise_ended_at, now)))
        events.extend(_event(alert_id, "outcome", now, {"outcome": outcome}) for alert_id in open_ids)

    def tickets_with_unclosed_alerts(self) -> set[str]:
        with Session(self.engine) as session:
            return set(session.execute(select(AlertRow.ticket_id).where(AlertRow.status != "closed")
                                       .distinct()).scalars())

    def ticket_states(self, ticket_ids: list[str]) -> dict[str, tuple[dict, bool]]:
        """(state, is_open) of each known ticket (for tickets with alerts that left the open queue)."""
        out: dict[str, tuple[dict, bool]] = {}
        with Session(self.engine) as session:
            for start in range(0, len(ticket_ids), 500):
                chunk = ticket_ids[start:start + 500]
                for row in session.execute(select(TicketRow.ticket_id, TicketRow.state, TicketRow.is_open)
                                           .where(TicketRow.ticket_id.in_(chunk))):
                    out[row.ticket_id] = (row.state, row.is_open)
        return out

    # --- the one-watcher lease -------------------------------------------------------------
    def acquire_lease(self, holder: str, ttl_seconds: float, now: datetime, name: str = WATCHER_LEASE) -> bool:
        """Take or renew the lease; True when `holder` holds it until now + ttl. One UPDATE decides
        (atomic on SQLite and PostgreSQL): the holder renews, anyone takes an expired lease."""
        expires = now + timedelta(seconds=ttl_seconds)
        with Session(self.write) as session, session.begin():
            taken = session.execute(
                update(LeaseRow).where(LeaseRow.name == name,
                                       or_(LeaseRow.holder == holder, LeaseRow.expires_at < now))
                .values(holder=holder, expires_at=expires,
                        acquired_at=case((LeaseRow.holder == holder, LeaseRow.acquired_at), else_=now))
            ).rowcount
            if taken:
                return True
            exists = session.execute(select(LeaseRow.name).where(LeaseRow.name == name)).scalar_one_or_none()
            if exists is not None:
                return False
        try:
            with Session(self.write) as session, session.begin():
                session.execute(insert(LeaseRow).values(name=name, holder=holder, acquired_at=now, expires_at=expires))
            return True
        except IntegrityError:  # inserted first by another process (or another thread of this holder)
            return self.lease_holder(now, name) == holder

    def release_lease(self, holder: str, name: str = WATCHER_LEASE) -> None:
        with Session(self.write) as session, session.begin():
            session.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))

    def lease_holder(self, now: datetime, name: str = WATCHER_LEASE) -> str | None:
        with Session(self.engine) as session:
            row = session.execute(select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == name)).first()
        return row.holder if row is not None and utc(row.expires_at) >= now else None

    # --- deliveries --------------------------------------------------------------------------
    def due_deliveries(self, destination: str, now: datetime, limit: int = 100) -> list[tuple[int, dict]]:
        """(delivery id, alert dict) of pending deliveries to `destination` due by `now`, oldest first."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(DeliveryRow.id, AlertRow).join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
                .where(DeliveryRow.status == "pending", DeliveryRow.destination == destination,
                       DeliveryRow.next_attempt_at <= now)
                .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id).limit(limit)
            ).all()
            return [(delivery_id, alert_dict(alert)) for delivery_id, alert in rows]

    def record_delivery(self, delivery_id: int, result: DeliveryResult, now: datetime, destination: Destination
                        ) -> str:
        """Store one round's result: delivered, pending again (the next round after the destination's
        redeliver wait, doubling per failed round up to its maximum), or a dead letter (a permanent
        failure, or failing for longer than its give_up_after_hours). Returns the new status."""
        with Session(self.write) as session, session.begin():
            row = session.get(DeliveryRow, delivery_id)
            if row is None or row.status != "pending":
                return row.status if row is not None else "unknown"
            row.attempts += result.attempts
            row.rounds += 1
            row.last_status = result.status
            row.last_error = None if result.ok else (result.error or "failed")[:255]
            detail = {"destination": row.destination, "attempts": row.attempts, "status": result.status}
            if result.ok:
                row.status, row.delivered_at = "delivered", now
                kind = "delivered"
            elif result.permanent or now - utc(row.created_at) >= timedelta(hours=destination.give_up_after_hours):
                row.status = "dead"
                kind = "dead_letter"
                detail["error"] = row.last_error
            else:
                wait = min(destination.redeliver_max_seconds,
                           destination.redeliver_initial_seconds * 2 ** min(row.rounds - 1, 20))
                row.next_attempt_at = now + timedelta(seconds=wait)
                kind = "delivery_failed"
                detail["error"] = row.last_error
            session.execute(insert(AlertEventRow).values(_event(row.alert_id, kind, now, detail)))
            return row.status

    def redrive_dead_letters(self, now: datetime, destination: str | None = None) -> int:
        """Dead letters back to pending (after a destination is fixed); returns how many."""
        with Session(self.write) as session, session.begin():
            query = update(DeliveryRow).where(DeliveryRow.status == "dead")
            if destination:
                query = query.where(DeliveryRow.destination == destination)
            return session.execute(query.values(status="pending", next_attempt_at=now, created_at=now)).rowcount

    def count_deliveries(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return dict(session.execute(select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status)).all())

    # --- the API's side ----------------------------------------------------------------------
    def list_alerts(self, now: datetime, status: str | None = None, team: str | None = None,
                    route_to: str | None = None, ticket_id: str | None = None, min_age_hours: float | None = None,
                    max_age_hours: float | None = None, limit: int = 50, offset: int = 0) -> dict:
        """Alerts, newest first, filtered by status, team (the ticket's group), route_to, ticket and age
        (hours since raised); {"alerts": [...], "total", "limit", "offset"}."""
        conditions = []
        for column, value in ((AlertRow.status, status), (AlertRow.team, team), (AlertRow.route_to, route_to),
                              (AlertRow.ticket_id, ticket_id)):
            if value is not None:
                conditions.append(column == value)
        if min_age_hours is not None:
            conditions.append(AlertRow.raised_at <= now - timedelta(hours=min_age_hours))
        if max_age_hours is not None:
            conditions.append(AlertRow.raised_at >= now - timedelta(hours=max_age_hours))
        where = and_(True, *conditions)
        with Session(self.engine) as session:
            rows = session.execute(select(AlertRow).where(where).order_by(AlertRow.raised_at.desc(), AlertRow.id.desc())
                                   .limit(limit).offset(offset)).scalars().all()
            total = session.execute(select(func.count()).select_from(AlertRow).where(where)).scalar_one()
            return {"alerts": [alert_dict(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    def get_alert(self, alert_id: int) -> dict | None:
        """The alert with its timeline (oldest first) and deliveries; None when unknown."""
        with Session(self.engine) as session:
            row = session.get(AlertRow, alert_id)
            if row is None:
                return None
            return {**alert_dict(row), "timeline": self._timeline(session, [alert_id]).get(alert_id, []),
                    "deliveries": self._deliveries(session, [alert_id]).get(alert_id, [])}

    def alerts_for_ticket(self, ticket_id: str) -> list[dict]:
        """Every alert of the ticket (oldest first), each with its timeline and deliveries."""
        with Session(self.engine) as session:
            rows = session.execute(select(AlertRow).where(AlertRow.ticket_id == ticket_id)
                                   .order_by(AlertRow.rise)).scalars().all()
            ids = [r.id for r in rows]
            timelines, deliveries = self._timeline(session, ids), self._deliveries(session, ids)
            return [{**alert_dict(r), "timeline": timelines.get(r.id, []), "deliveries": deliveries.get(r.id, [])}
                    for r in rows]

    def acknowledge(self, alert_id: int, by: str, verdict: str, note: str | None, now: datetime) -> dict:
        """Record who acknowledged, their verdict and note (committed before returning).

        Raises AlertNotFound, AlertConflict (already acknowledged or closed), ValueError (bad verdict)."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        with Session(self.write) as session, session.begin():
            row = session.get(AlertRow, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            if row.acknowledged_at is not None:
                raise AlertConflict(f"alert {alert_id} was already acknowledged at {iso(row.acknowledged_at)}")
            row.acknowledged_at, row.acknowledged_by, row.verdict, row.note = now, by, verdict, note
            if row.status == "open":
                row.status = "acknowledged"
            session.execute(insert(AlertEventRow).values(_event(alert_id, "acknowledged", now,
                                                                {"by": by, "verdict": verdict, "note": note})))
        return self.get_alert(alert_id)

    def _timeline(self, session: Session, alert_ids: list[int]) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        if not alert_ids:
            return out
        for event in session.execute(select(AlertEventRow).where(AlertEventRow.alert_id.in_(alert_ids))
                                     .order_by(AlertEventRow.at, AlertEventRow.id)).scalars():
            out.setdefault(event.alert_id, []).append({"kind": event.kind, "time": iso(event.at), **event.detail})
        return out

    def _deliveries(self, session: Session, alert_ids: list[int]) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        if not alert_ids:
            return out
        for d in session.execute(select(DeliveryRow).where(DeliveryRow.alert_id.in_(alert_ids))
                                 .order_by(DeliveryRow.id)).scalars():
            out.setdefault(d.alert_id, []).append({
                "destination": d.destination, "status": d.status, "attempts": d.attempts,
                "delivered_at": iso(d.delivered_at), "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending"
                else None, "last_status": d.last_status, "last_error": d.last_error})
        return out


def _event(alert_id: int, kind: str, at: datetime, detail: dict) -> dict:
    return {"alert_id": alert_id, "kind": kind, "at": at, "detail": detail}


def _score_detail(score: dict | None) -> dict:
    if score is None:
        return {}
    return {"probability": score["escalation"]["probability"], "band": score["escalation"]["band"],
            "escalate_now": score["escalation"]["escalate_now"]}


def alert_dict(row: AlertRow) -> dict:
    return {
        "alert_id": row.id, "key": row.key, "ticket_id": row.ticket_id, "rise": row.rise, "trigger": row.trigger,
        "status": row.status, "raised_at": iso(row.raised_at), "rise_ended_at": iso(row.rise_ended_at),
        "probability": row.probability, "band": row.band, "escalate_now": row.escalate_now,
        "reasons": row.reasons, "action": row.action, "route_to": row.route_to, "team": row.team,
        "due_at": iso(row.due_at), "model_version": row.model_version,
        "acknowledgement": None if row.acknowledged_at is None else {
            "at": iso(row.acknowledged_at), "by": row.acknowledged_by, "verdict": row.verdict, "note": row.note},
        "outcome": row.outcome, "closed_at": iso(row.closed_at),
    }
