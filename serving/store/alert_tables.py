"""The alert tables (SQLAlchemy 2 declarative, on serving.store.db.Base); schema by migration 0002_alerts.

- `alerts`: one row per rise of a ticket above the alert line (escalate_now, or band high), with
  the score, reasons and the escalation matrix's action at that moment, its acknowledgement and
  its outcome. (ticket_id, rise) is unique: the same rise can never be raised twice, even by two
  watchers racing after a lease handover.
- `alert_events`: each alert's timeline (raised, risen_again, fell_below, delivered,
  delivery_failed, dead_letter, acknowledged, outcome).
- `deliveries`: one row per (alert, destination): an outbox written in the same transaction as
  the alert, so no alert is lost when a destination (or the watcher) is down; a delivery that
  keeps failing past its destination's give-up time becomes a dead letter (status "dead").
- `leases`: the one-watcher lease (name -> holder until expires_at).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from serving.store.db import Base
from serving.store.tables import Id, UtcTime


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))  # idempotency base of every delivery
    ticket_id: Mapped[str] = mapped_column(String(255))
    rise: Mapped[int] = mapped_column(Integer)  # 1 for the ticket's first rise, then 2, ...
    trigger: Mapped[str] = mapped_column(String(32))  # escalate_now | band_high
    status: Mapped[str] = mapped_column(String(16))  # open | acknowledged | closed
    raised_at: Mapped[datetime] = mapped_column(UtcTime)
    rise_ended_at: Mapped[datetime | None] = mapped_column(UtcTime)  # the ticket fell below the line
    probability: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16))
    escalate_now: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list] = mapped_column(JSON)
    action: Mapped[dict] = mapped_column(JSON)
    route_to: Mapped[str | None] = mapped_column(String(255))
    team: Mapped[str | None] = mapped_column(String(255))  # the ticket's group when raised
    due_at: Mapped[datetime | None] = mapped_column(UtcTime)
    model_version: Mapped[str | None] = mapped_column(String(128))
    level_at_raise: Mapped[int] = mapped_column(Integer, default=0)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    verdict: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))  # escalated | closed_without_escalation
    closed_at: Mapped[datetime | None] = mapped_column(UtcTime)

    __table_args__ = (
        UniqueConstraint("key", name="uq_alerts_key"),
        UniqueConstraint("ticket_id", "rise", name="uq_alerts_ticket_rise"),
        Index("ix_alerts_status_raised", "status", "raised_at"),
        Index("ix_alerts_ticket", "ticket_id", "status"),
        Index("ix_alerts_team", "team"),
        Index("ix_alerts_route_to", "route_to"),
    )


class AlertEventRow(Base):
    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Id, ForeignKey("alerts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcTime)
    detail: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (Index("ix_alert_events_alert", "alert_id", "at"),)


class DeliveryRow(Base):
    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Id, ForeignKey("alerts.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
        UniqueConstraint("alert_id", "destination", name="uq_deliveries_alert_destination"),
        Index("ix_deliveries_due", "status", "destination", "next_attempt_at"),
    )


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UtcTime)
    expires_at: Mapped[datetime] = mapped_column(UtcTime)
