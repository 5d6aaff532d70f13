"""Alembic environment for the ticket store (configured in code by serving.store.db.alembic_config).

Migrations run in one transaction under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), so several service processes starting together migrate once.
"""

from __future__ import annotations

from alembic import context

from serving.store.db import create_store_engine, is_sqlite, write_engine

MIGRATION_LOCK_ID = 1_406_014  # PostgreSQL advisory lock key for schema upgrades


def run_migrations_online() -> None:
    url = context.config.attributes["store_url"]
    engine = write_engine(create_store_engine(url))
    try:
        with engine.begin() as connection:
            if not is_sqlite(url):
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            context.configure(connection=connection, target_metadata=None, render_as_batch=is_sqlite(url))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the ticket store's migrations run online only (escalation-risk db upgrade)")
run_migrations_online()
