"""The ticket store: tickets, ticket_events, ticket_scores, ticket_history.

Revision ID: 0001_tickets
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_tickets"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(255), primary_key=True),
        sa.Column("created_at", UtcTime, nullable=False),
        sa.Column("last_event_time", UtcTime, nullable=False),
        sa.Column("updated_at", UtcTime, nullable=False),
        sa.Column("status", sa.String(64)),
        sa.Column("is_open", sa.Boolean, nullable=False),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("group_name", sa.String(255)),
        sa.Column("category", sa.String(255)),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("text_dropped_at", UtcTime),
        sa.Column("probability", sa.Float),
        sa.Column("band", sa.String(16)),
        sa.Column("escalate_now", sa.Boolean),
        sa.Column("scored_at", UtcTime),
        sa.Column("model_version", sa.String(128)),
        sa.Column("features", sa.JSON),
    )
    # The queue reads open tickets by risk, whole or for one team, agent, category or band: each
    # index ends in (probability, ticket_id) so a page is an index range, never a sort of the table.
    op.create_index("ix_tickets_queue", "tickets", ["is_open", "probability", "ticket_id"])
    op.create_index("ix_tickets_group", "tickets", ["group_name", "is_open", "probability", "ticket_id"])
    op.create_index("ix_tickets_agent", "tickets", ["agent_id", "is_open", "probability", "ticket_id"])
    op.create_index("ix_tickets_category", "tickets", ["category", "is_open", "probability", "ticket_id"])
    op.create_index("ix_tickets_band", "tickets", ["band", "is_open", "probability", "ticket_id"])
    op.create_index("ix_tickets_last_event_time", "tickets", ["last_event_time"])

    op.create_table(
        "ticket_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(255), sa.ForeignKey("tickets.ticket_id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
                  nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("source_event_id", sa.String(255)),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.Column("event_time", UtcTime, nullable=False),
        sa.Column("received_at", UtcTime, nullable=False),
        sa.Column("partial", sa.Boolean, nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("has_text", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("ticket_id", "dedupe_key", name="uq_ticket_events_dedupe"),
    )
    op.create_index("ix_ticket_events_ticket_time", "ticket_events", ["ticket_id", "event_time"])
    op.create_index("ix_ticket_events_text", "ticket_events", ["has_text", "event_time"])

    op.create_table(
        "ticket_scores",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(255), sa.ForeignKey("tickets.ticket_id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
                  nullable=False),
        sa.Column("event_id", Id, sa.ForeignKey("ticket_events.id", ondelete="SET NULL", deferrable=True, initially="DEFERRED")),
        sa.Column("scored_at", UtcTime, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("escalate_now", sa.Boolean, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
    )
    op.create_index("ix_ticket_scores_ticket", "ticket_scores", ["ticket_id", "scored_at"])
    op.create_index("ix_ticket_scores_event", "ticket_scores", ["event_id"])

    op.create_table(
        "ticket_history",
        sa.Column("seq", Id, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.String(255), nullable=False),
        sa.Column("created_at", UtcTime, nullable=False),
        sa.Column("ended_at", UtcTime),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("group_name", sa.String(255)),
        sa.Column("category", sa.String(255)),
    )
    op.create_index("ix_ticket_history_ticket_id", "ticket_history", ["ticket_id"])


def downgrade() -> None:
    op.drop_table("ticket_history")
    op.drop_table("ticket_scores")
    op.drop_table("ticket_events")
    op.drop_table("tickets")
