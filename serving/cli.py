"""The service's commands of `escalation-risk` (assembled by cli.main): serve, db upgrade/purge, ingest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.common import UserError
from features.settings import Settings

commands = click.Group("serving", help="Serving's commands (cli.main adds each to escalation-risk).")


@commands.command()
@click.option("--host", default=None, help="Address to bind (default: ESCALATION_RISK_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: 8080).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="gunicorn worker processes (default: 2).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per worker (default: 4).")
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None) -> None:
    """Start the scoring service under gunicorn (serving/gunicorn.conf.py) and keep it in the foreground."""
    import os

    import serving

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers, "threads": threads}.items()
                 if v is not None}
    settings = Settings(**overrides)
    if settings.state == "on":
        migrate_store(settings)  # once, before gunicorn's workers open the store
    if not settings.mlflow_tracking_uri and not settings.resolved_model_path.exists():
        raise UserError(f"no model at {settings.resolved_model_path}; run `escalation-risk train` "
                        "(or `make train`) first, or set MLFLOW_TRACKING_URI to serve the registered champion")
    if not settings.api_keys and settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise UserError(f"refusing to serve on {settings.host} without API keys; "
                        "set ESCALATION_RISK_API_KEYS or bind to 127.0.0.1")
    config_path = Path(serving.__file__).resolve().parent / "gunicorn.conf.py"
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(config_path), "serving.app:create_served_app()"]
    click.echo(f"serving on http://{settings.host}:{settings.port} (docs at /docs)")
    sys.stdout.flush()
    # gunicorn's workers read the options through Settings, like every other option.
    os.environ.update({f"ESCALATION_RISK_{k.upper()}": str(v) for k, v in overrides.items()})
    os.execv(sys.executable, gunicorn)  # gunicorn replaces this process: signals reach its master directly


def migrate_store(settings: Settings) -> str:
    """Upgrade the ticket store to the newest schema; returns its URL with any password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from serving.store.db import upgrade_database

    url = settings.resolved_store_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        upgrade_database(url)
    except (SQLAlchemyError, OSError) as exc:
        raise UserError(f"cannot upgrade the ticket store at {shown}: {type(exc).__name__}: "
                        f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    return shown


def open_store(settings: Settings):
    from serving.store.db import create_store_engine
    from serving.store.tickets import TicketStore

    migrate_store(settings)
    return TicketStore(create_store_engine(settings.resolved_store_url, settings.store_busy_timeout_seconds))


@commands.group()
def db() -> None:
    """The ticket store's database (ESCALATION_RISK_STORE_URL; default SQLite at data/tickets.db)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the ticket store or bring it to the newest schema (Alembic migrations)."""
    shown = migrate_store(Settings())
    click.echo(f"ticket store at {shown} is at the newest schema")


@db.command("purge")
@click.option("--before", "before", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Drop ticket text of events and tickets before this date (UTC); default: now minus "
                   "ESCALATION_RISK_TEXT_RETENTION_DAYS (30).")
def db_purge(before) -> None:
    """Drop ticket text (subject, description, messages) older than a date; ids, counters and scores stay."""
    from datetime import UTC, datetime, timedelta

    settings = Settings()
    store = open_store(settings)
    cutoff = before.replace(tzinfo=UTC) if before else datetime.now(UTC) - timedelta(days=settings.text_retention_days)
    counts = store.purge_text(cutoff)
    click.echo(f"dropped the text of {counts['events']:,} events and {counts['tickets']:,} tickets before "
               f"{cutoff.isoformat()}")


@commands.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="The export to ingest.")
@click.option("--source", type=click.Choice(["events", "servicenow", "mapping"]), default="events", show_default=True,
              help="events: a canonical event log (Parquet/CSV); servicenow: the incident audit-log export; "
                   "mapping: any export described by --mapping FILE.")
@click.option("--mapping", "mapping_path", type=click.Path(path_type=Path), default=None,
              help="Mapping file (YAML) for --source mapping, or to override the ServiceNow one.")
@click.option("--batch-size", type=click.IntRange(100, 100_000), default=5000, show_default=True)
@click.option("--rejects", "rejects_path", type=click.Path(path_type=Path), default=None,
              help="Where rejected rows and their reasons go (default: reports/ingest_rejects.csv).")
def ingest(data_path: Path, source: str, mapping_path: Path | None, batch_size: int, rejects_path: Path | None) -> None:
    """Backfill the ticket store from an export, so live history is complete from day one."""
    from serving.ingest import ingest_events, read_export

    if mapping_path is not None and source == "events":
        source = "mapping"
    settings = Settings()
    try:
        raw = read_export(data_path, source, mapping_path)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise UserError(str(exc)) from exc
    except Exception as exc:  # a mapping problem or an unreadable file: say which, no stack trace
        raise UserError(f"cannot read {data_path}: {type(exc).__name__}: {exc}") from exc
    store = open_store(settings)
    rejects_path = rejects_path or settings.resolved_reports_dir / "ingest_rejects.csv"
    result = ingest_events(store, raw, batch_size, rejects_path)
    rate = result.recorded / result.seconds if result.seconds > 0 else 0.0
    click.echo(f"ingested {data_path}: {result.rows:,} rows, {result.recorded:,} events recorded, "
               f"{result.duplicates:,} already there, {result.rejected:,} rejected "
               f"({result.seconds:.1f} s, {rate:,.0f} events/s)")
    if result.rejects_path:
        click.echo(f"rejected rows and reasons: {result.rejects_path}")
