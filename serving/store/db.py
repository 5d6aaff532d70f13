"""The ticket store's database: the shared declarative `Base`, engines, and Alembic migrations.

SQLite (the default, one file, created on first use) runs in WAL mode with a busy timeout,
foreign keys on and `synchronous=FULL`, so a committed transaction survives a crash of the
process or the machine ("durable before acknowledged"). Write units of work begin with
`BEGIN IMMEDIATE` (`write_engine`): two SQLite writers then queue on the busy timeout instead
of failing on a read-to-write lock upgrade. PostgreSQL is used by URL when several service
processes or hosts share the store; its writers lock the ticket row they merge into.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0


class Base(DeclarativeBase):
    """Every store table (tickets, events, scores, alerts, ...) is declared on this one base."""


class StoreUnavailable(RuntimeError):
    """The store cannot take the unit of work now (locked, full, unreachable); nothing was written.

    `retry_after` is the number of seconds a client should wait before trying again.
    """

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_store_engine(url: str, busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS) -> Engine:
    """An engine for the store at `url` (sqlite:///path or postgresql+psycopg2://...).

    SQLite: the file's folder is created; each connection gets WAL, busy_timeout (ms),
    foreign_keys and synchronous=FULL. Raises sqlalchemy.exc.ArgumentError for a bad URL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # The Python driver's own timeout is the lock wait too; both set so neither gives up first.
    engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False})
    busy_ms = int(busy_timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def configure_sqlite(dbapi_connection, connection_record) -> None:
        # Transactions are begun by the "begin" listener below, not by the driver's guesswork.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin_sqlite(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def write_engine(engine: Engine) -> Engine:
    """The same engine whose SQLite transactions take the write lock at BEGIN (no-op elsewhere)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def unavailable_reason(exc: BaseException) -> StoreUnavailable | None:
    """A StoreUnavailable when `exc` means "busy, locked, full or unreachable, try later", else None."""
    if not isinstance(exc, OperationalError | DBAPIError):
        return None
    text = str(getattr(exc, "orig", exc)).lower()
    if "locked" in text or "busy" in text:
        return StoreUnavailable("the ticket store is busy (locked by another writer); try again", 2)
    if "disk is full" in text or "database or disk is full" in text or "no space" in text:
        return StoreUnavailable("the ticket store is full; nothing was written", 30)
    if "could not serialize" in text or "deadlock" in text:
        return StoreUnavailable("the ticket store had a conflicting concurrent write; try again", 1)
    if isinstance(exc, OperationalError) and ("connect" in text or "terminat" in text or "closed" in text):
        return StoreUnavailable("the ticket store cannot be reached; try again", 5)
    return None


def alembic_config(url: str):
    """Alembic's config for the store's migrations, built in code (no alembic.ini to ship)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["store_url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the store at `url` to the newest schema (Alembic `upgrade head`); creates SQLite files.

    Runs at service start-up and by `escalation-risk db upgrade`; safe to run again (no-op).
    """
    from alembic import command

    if is_sqlite(url):
        create_store_engine(url).dispose()  # creates the folder, switches the file to WAL
    command.upgrade(alembic_config(url), "head")
