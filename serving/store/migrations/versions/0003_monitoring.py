"""The ops view: feedback (verdicts and true outcomes), health_reports (the latest live view).

Revision ID: 0003_monitoring
Revises: 0002_alerts
Create Date: 2026-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_monitoring"
down_revision = "0002_alerts"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(255), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("escalation_type", sa.String(64)),
        sa.Column("escalated_at", UtcTime),
        sa.Column("who", sa.String(255)),
        sa.Column("note", sa.Text),
        sa.Column("model_version", sa.String(128)),
        sa.Column("probability", sa.Float),
        sa.Column("received_at", UtcTime, nullable=False),
    )
    op.create_index("ix_feedback_ticket", "feedback", ["ticket_id", "received_at"])
    op.create_index("ix_feedback_received", "feedback", ["received_at"])
    op.create_table(
        "health_reports",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("computed_at", UtcTime, nullable=False),
        sa.Column("window_from", UtcTime, nullable=False),
        sa.Column("window_to", UtcTime, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.create_index("ix_health_reports_computed", "health_reports", ["computed_at"])


def downgrade() -> None:
    op.drop_index("ix_health_reports_computed", "health_reports")
    op.drop_table("health_reports")
    op.drop_index("ix_feedback_received", "feedback")
    op.drop_index("ix_feedback_ticket", "feedback")
    op.drop_table("feedback")
