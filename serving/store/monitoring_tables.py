"""The ops view's tables (on serving.store.db.Base); schema by migration 0003_monitoring.

- `feedback`: what people said about a ticket's score (POST /v1/feedback): agree / disagree, and
  optionally the true outcome and escalation type, who, a note, and when it was received. The
  training export (serving/outcomes.py) folds outcomes received before its cut-off into the next
  training data.
- `health_reports`: the latest computed live view (against case mix, model health, drift) as
  JSON, so every service process shows and exports the same numbers without recomputing them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from serving.store.db import Base
from serving.store.tables import Id, UtcTime


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(255))
    verdict: Mapped[str] = mapped_column(String(16))  # agree | disagree
    outcome: Mapped[str | None] = mapped_column(String(32))  # escalated | not_escalated (the true outcome)
    escalation_type: Mapped[str | None] = mapped_column(String(64))
    escalated_at: Mapped[datetime | None] = mapped_column(UtcTime)  # when it escalated, if the sender knows
    who: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(128))  # the model whose score it judges
    probability: Mapped[float | None] = mapped_column(Float)  # that score, as the store had it when the feedback came
    received_at: Mapped[datetime] = mapped_column(UtcTime)

    __table_args__ = (
        Index("ix_feedback_ticket", "ticket_id", "received_at"),
        Index("ix_feedback_received", "received_at"),
    )


class HealthReportRow(Base):
    __tablename__ = "health_reports"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    computed_at: Mapped[datetime] = mapped_column(UtcTime)
    window_from: Mapped[datetime] = mapped_column(UtcTime)
    window_to: Mapped[datetime] = mapped_column(UtcTime)
    model_version: Mapped[str] = mapped_column(String(128))
    report: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (Index("ix_health_reports_computed", "computed_at"),)
