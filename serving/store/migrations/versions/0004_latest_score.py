"""tickets.latest_score: the ticket's latest score as given, by a request or the queue watcher.

Revision ID: 0004_latest_score
Revises: 0003_monitoring
Create Date: 2026-11-30

The tickets row already held the latest score's probability, band, escalate_now, time and model
version (the queue orders by them); this column holds the rest of that same score (reasons when
computed, action, priority) with who gave it, so the ticket view, the queue and the dashboard read
one score. Rows from before it stay NULL until their next score (TicketStore.get_ticket reads them
from the columns and the score log meanwhile).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_latest_score"
down_revision = "0003_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("latest_score", sa.JSON, nullable=True))  # ALTER TABLE ADD: no copy


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("latest_score")
