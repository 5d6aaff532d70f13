"""Alerts: alerts, alert_events, deliveries (the outbox and dead letters), leases (one watcher).

Revision ID: 0002_alerts
Revises: 0001_tickets
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_alerts"
down_revision = "0001_tickets"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("ticket_id", sa.String(255), nullable=False),
        sa.Column("rise", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raised_at", UtcTime, nullable=False),
        sa.Column("rise_ended_at", UtcTime),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("escalate_now", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("action", sa.JSON, nullable=False),
        sa.Column("route_to", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.Column("due_at", UtcTime),
        sa.Column("model_version", sa.String(128)),
        sa.Column("level_at_raise", sa.Integer, nullable=False, server_default="0"),
        sa.Column("acknowledged_at", UtcTime),
        sa.Column("acknowledged_by", sa.String(255)),
        sa.Column("verdict", sa.String(32)),
        sa.Column("note", sa.Text),
        sa.Column("outcome", sa.String(32)),
        sa.Column("closed_at", UtcTime),
        sa.UniqueConstraint("key", name="uq_alerts_key"),
        sa.UniqueConstraint("ticket_id", "rise", name="uq_alerts_ticket_rise"),
    )
    op.create_index("ix_alerts_status_raised", "alerts", ["status", "raised_at"])
    op.create_index("ix_alerts_ticket", "alerts", ["ticket_id", "status"])
    op.create_index("ix_alerts_team", "alerts", ["team"])
    op.create_index("ix_alerts_route_to", "alerts", ["route_to"])
    op.create_table(
        "alert_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", Id, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", UtcTime, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_alert_events_alert", "alert_events", ["alert_id", "at"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("alert_id", Id, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(160), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rounds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UtcTime, nullable=False),
        sa.Column("next_attempt_at", UtcTime, nullable=False),
        sa.Column("delivered_at", UtcTime),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(255)),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
        sa.UniqueConstraint("alert_id", "destination", name="uq_deliveries_alert_destination"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "destination", "next_attempt_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_at", UtcTime, nullable=False),
        sa.Column("expires_at", UtcTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("deliveries")
    op.drop_table("alert_events")
    op.drop_table("alerts")
