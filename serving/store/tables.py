"""The ticket store's tables (SQLAlchemy 2 declarative, on serving.store.db.Base).

Times are stored timezone-aware (UTC). `tickets.state` is the merged canonical ticket as JSON
(times as ISO 8601 strings); `ticket_events.fields` is what one event carried; `ticket_history`
is an append-only log of each ticket's as-of history facts (features.history), read by every
service process to keep its live history index current. The schema itself is created by the
Alembic migrations in serving/store/migrations (written by hand), never by `create_all`. Foreign keys are checked at commit (DEFERRABLE INITIALLY DEFERRED), so a unit
of work may write a ticket's events before the ticket row it creates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from serving.store.db import Base

# SQLite's rowid alias must be INTEGER; PostgreSQL gets a 64-bit id.
Id = BigInteger().with_variant(Integer(), "sqlite")
UtcTime = DateTime(timezone=True)


class TicketRow(Base):
    """One ticket: its latest merged state, what the queue filters on, and its latest score."""

    __tablename__ = "tickets"

    ticket_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcTime)
    last_event_time: Mapped[datetime] = mapped_column(UtcTime)
    updated_at: Mapped[datetime] = mapped_column(UtcTime)  # received time of the latest change
    status: Mapped[str | None] = mapped_column(String(64))
    is_open: Mapped[bool] = mapped_column(Boolean)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    group_name: Mapped[str | None] = mapped_column(String(255))
    category: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[dict] = mapped_column(JSON)
    history: Mapped[dict] = mapped_column(JSON)  # as-of facts so far: first entities, levels, closed_since
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    text_dropped_at: Mapped[datetime | None] = mapped_column(UtcTime)
    probability: Mapped[float | None] = mapped_column(Float)
    band: Mapped[str | None] = mapped_column(String(16))
    escalate_now: Mapped[bool | None] = mapped_column(Boolean)
    scored_at: Mapped[datetime | None] = mapped_column(UtcTime)
    model_version: Mapped[str | None] = mapped_column(String(128))
    features: Mapped[dict | None] = mapped_column(JSON)  # the latest score's feature values (None: not kept)
    # The latest score as given (TicketStore.latest_score_record): the response plus source and reasons_computed.
    latest_score: Mapped[dict | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_tickets_queue", "is_open", "probability", "ticket_id"),
        Index("ix_tickets_group", "group_name", "is_open", "probability", "ticket_id"),
        Index("ix_tickets_agent", "agent_id", "is_open", "probability", "ticket_id"),
        Index("ix_tickets_category", "category", "is_open", "probability", "ticket_id"),
        Index("ix_tickets_band", "band", "is_open", "probability", "ticket_id"),
        Index("ix_tickets_last_event_time", "last_event_time"),
    )


class TicketEventRow(Base):
    """One event received: where from, the source's id, when it happened, what it carried."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(255), ForeignKey("tickets.ticket_id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"))
    source: Mapped[str] = mapped_column(String(64))
    source_event_id: Mapped[str | None] = mapped_column(String(255))
    dedupe_key: Mapped[str] = mapped_column(String(64))
    event_time: Mapped[datetime] = mapped_column(UtcTime)
    received_at: Mapped[datetime] = mapped_column(UtcTime)
    partial: Mapped[bool] = mapped_column(Boolean)
    fields: Mapped[dict] = mapped_column(JSON)
    has_text: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("ticket_id", "dedupe_key", name="uq_ticket_events_dedupe"),
        Index("ix_ticket_events_ticket_time", "ticket_id", "event_time"),
        Index("ix_ticket_events_text", "has_text", "event_time"),
    )


class ScoreRow(Base):
    """One score given: time, model version, probability, band, escalate_now, and the full answer
    (`response`: reasons, priority, action) as it was sent."""

    __tablename__ = "ticket_scores"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(255), ForeignKey("tickets.ticket_id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"))
    event_id: Mapped[int | None] = mapped_column(Id, ForeignKey("ticket_events.id", ondelete="SET NULL", deferrable=True, initially="DEFERRED"))
    scored_at: Mapped[datetime] = mapped_column(UtcTime)
    model_version: Mapped[str] = mapped_column(String(128))
    probability: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(16))
    escalate_now: Mapped[bool] = mapped_column(Boolean)
    response: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_ticket_scores_ticket", "ticket_id", "scored_at"),
        Index("ix_ticket_scores_event", "event_id"),
    )


class HistoryRow(Base):
    """A ticket's as-of history facts (features.history.summarize_tickets' row) each time they change."""

    __tablename__ = "ticket_history"

    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcTime)
    escalated: Mapped[bool] = mapped_column(Boolean)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    group_name: Mapped[str | None] = mapped_column(String(255))
    category: Mapped[str | None] = mapped_column(String(255))
