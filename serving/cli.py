"""The service's commands of `escalation-risk` (assembled by cli.main): serve, watch, replay, db upgrade/purge,
ingest."""

from __future__ import annotations

import json
import sys
import time
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
    if settings.watch == "on" and settings.state == "on":
        # The queue watcher beside gunicorn: a child that stops when this process (gunicorn's master
        # after the exec below, same pid) goes away. Every instance starts one; the store's lease lets
        # one act. ESCALATION_RISK_WATCH=off leaves it out.
        import subprocess

        subprocess.Popen([sys.executable, "-m", "cli", "watch", "--parent-pid", str(os.getpid())])
    config_path = Path(serving.__file__).resolve().parent / "gunicorn.conf.py"
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(config_path), "serving.app:create_served_app()"]
    click.echo(f"serving on http://{settings.host}:{settings.port} (docs at /docs)")
    sys.stdout.flush()
    # gunicorn's workers read the options through Settings, like every other option.
    os.environ.update({f"ESCALATION_RISK_{k.upper()}": str(v) for k, v in overrides.items()})
    os.execv(sys.executable, gunicorn)  # gunicorn replaces this process: signals reach its master directly


class UtcMoment(click.ParamType):
    """An ISO 8601 date or time ("2026-01-01", "2026-01-01T10:00:00", "...Z", "...+02:00") as an aware
    UTC datetime; a time without an offset is UTC."""

    name = "date"

    def convert(self, value, param, ctx):
        from serving.store.tickets import parse_time  # the store's own reading of a time

        try:
            moment = parse_time(value.strip() if isinstance(value, str) else value)
        except ValueError:
            moment = None
        if moment is None:
            self.fail(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-01-01 or 2026-01-01T10:00:00Z)",
                      param, ctx)
        return moment


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
@click.option("--before", "before", type=UtcMoment(), default=None,
              help="Drop ticket text of events and tickets before this date or time (ISO 8601; UTC unless it "
                   "says otherwise); default: now minus ESCALATION_RISK_TEXT_RETENTION_DAYS (30).")
def db_purge(before) -> None:
    """Drop ticket text (subject, description, messages) older than a date; ids, counters and scores stay.
    A date in the future is refused (it would drop the text of every ticket, today's included)."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    if before is not None and before > now:
        raise UserError(f"--before {before.isoformat()} is in the future: that would drop the text of every "
                        "ticket, open ones included, and cannot be undone; give a past date")
    settings = Settings()
    store = open_store(settings)
    cutoff = before or now - timedelta(days=settings.text_retention_days)
    counts = store.purge_text(cutoff)
    click.echo(f"dropped the text of {counts['events']:,} events and {counts['tickets']:,} tickets before "
               f"{cutoff.isoformat()}")


@db.command("export")
@click.option("--before", "before", type=UtcMoment(), default=None,
              help="The cut-off (ISO 8601, UTC unless it says otherwise): only events that happened and were received by then, and feedback "
                   "received by then (default: now).")
@click.option("--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Where the event log goes (default: data/store_events.parquet).")
def db_export(before, output_path: Path | None) -> None:
    """Export the store as a canonical event log for training, with reported outcomes folded in, as known
    at the cut-off (train on it with `escalation-risk train --extra-data FILE --cutoff SAME`)."""
    from datetime import UTC, datetime

    from serving.outcomes import export_training_events, write_export

    settings = Settings()
    store = open_store(settings)
    cutoff = before or datetime.now(UTC)
    metadata_path = settings.resolved_model_path / "metadata.json"
    params = json.loads(metadata_path.read_text()).get("params", {}) if metadata_path.is_file() else {}
    closed = list(params.get("snapshots.closed_statuses") or sorted(store.closed_statuses))
    export = export_training_events(store.engine, cutoff, closed)
    path = write_export(export, output_path or settings.project_dir / "data" / "store_events.parquet")
    click.echo(f"exported {export.tickets:,} tickets ({len(export.events):,} rows) as known at {cutoff.isoformat()} "
               f"to {path}; reported escalations folded in: {export.feedback_folded:,} "
               f"(ignored: {export.feedback_ignored:,})")


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
@click.option("--max-reject-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Exit with code 2 (after recording the good rows) when more of the rows than this are "
                   "rejected; the same 5 % as training's data.max_reject_share.")
def ingest(data_path: Path, source: str, mapping_path: Path | None, batch_size: int, rejects_path: Path | None,
           max_reject_share: float) -> None:
    """Backfill the ticket store from an export, so live history is complete from day one.

    Rows that fail validation are written with their reasons to --rejects; the others are recorded.
    Exit code 2: the export cannot be read or lacks a required column (nothing recorded), or more
    than --max-reject-share of its rows were rejected (the good rows recorded: rerun after fixing
    the export records only what is new)."""
    from features.schema import SchemaError
    from serving.ingest import ingest_events, read_export

    if mapping_path is not None and source == "events":
        source = "mapping"
    settings = Settings()
    try:
        raw = read_export(data_path, source, mapping_path)
    except (FileNotFoundError, ValueError, KeyError) as exc:  # SchemaError and MappingError are ValueErrors
        raise UserError(_naming(data_path, exc)) from exc
    except Exception as exc:  # a mapping problem or an unreadable file: say which, no stack trace
        raise UserError(f"cannot read {data_path}: {type(exc).__name__}: {exc}") from exc
    store = open_store(settings)
    rejects_path = rejects_path or settings.resolved_reports_dir / "ingest_rejects.csv"
    try:
        result = ingest_events(store, raw, batch_size, rejects_path)
    except SchemaError as exc:  # raised by validation, before anything is recorded
        raise UserError(f"{_naming(data_path, exc)}; nothing recorded") from exc
    rate = result.recorded / result.seconds if result.seconds > 0 else 0.0
    click.echo(f"ingested {data_path}: {result.rows:,} rows, {result.recorded:,} events recorded, "
               f"{result.duplicates:,} already there, {result.rejected:,} rejected ({result.reject_share:.1%}) "
               f"({result.seconds:.1f} s, {rate:,.0f} events/s)")
    if result.rejected:
        reasons = "; ".join(f"{reason} ({n:,} rows)" for reason, n in list(result.reasons.items())[:5])
        click.echo(f"REJECTED {result.rejected:,} of {result.rows:,} rows ({result.reject_share:.1%}), not recorded: "
                   f"{reasons}", err=True)
    if result.rejects_path:
        click.echo(f"rejected rows and reasons: {result.rejects_path} (`row`: 0-based data row "
                   "as read, row 0 = the line after a CSV's header; docs/serving.md)", err=True)
    if result.reject_share > max_reject_share:
        raise UserError(f"{result.reject_share:.1%} of the {result.rows:,} rows of {data_path} were rejected, more "
                        f"than the allowed {max_reject_share:.1%} (--max-reject-share); the {result.recorded:,} new "
                        "good rows are recorded: fix the rejected rows and ingest again (rows already recorded "
                        "are not recorded twice)")


def _naming(data_path: Path, exc: Exception) -> str:
    """The error's message, with the file it concerns in front unless it names it already."""
    text = str(exc)
    return text if Path(data_path).name in text else f"{data_path}: {text}"


@commands.command()
@click.option("--once", is_flag=True, help="Run one tick and one delivery round, print what happened, exit.")
@click.option("--interval", default=None, help="Tick every this long, e.g. 5m (default: ESCALATION_RISK_WATCH_INTERVAL_SECONDS or 5m).")
@click.option("--parent-pid", type=int, default=None, hidden=True, help="Stop when this process is gone (serve).")
def watch(once: bool, interval: str | None, parent_pid: int | None) -> None:
    """Re-score every open ticket in the store on a schedule and raise and deliver alerts.

    One watcher acts at a time (a lease in the store): start one beside every service instance;
    the others wait and take over when the active one stops renewing its lease."""
    import logging
    import os
    import signal
    import threading

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as under gunicorn: LightGBM on small batches, no oversubscription
    from serving.app import configure_logging
    from serving.destinations import DestinationError, load_destinations
    from serving.live_model import ModelHolder
    from serving.policy import PolicyError, load_policy
    from serving.replay import parse_duration
    from serving.store.db import create_store_engine, upgrade_database
    from serving.store.tickets import TicketStore
    from serving.watcher import Watcher, run_scheduled

    # The watcher's log lines are JSON, like the service's beside it (no ticket text in either).
    ours = logging.getLogger("escalation_risk")
    configure_logging(ours)
    ours.propagate = False  # not again in plain text through the root logger
    settings = Settings()
    if interval is not None:
        try:
            settings = Settings(watch_interval_seconds=parse_duration(interval).total_seconds())
        except ValueError as exc:
            raise UserError(f"--interval: {exc}") from exc
    try:
        policy = load_policy(settings.resolved_policy_path)
        destinations = load_destinations(settings.resolved_destinations_path, settings)
    except (PolicyError, DestinationError) as exc:
        raise UserError(str(exc)) from exc
    url = settings.resolved_store_url
    upgrade_database(url)
    engine = create_store_engine(url, settings.store_busy_timeout_seconds)
    holder = ModelHolder(settings, settings.watch_text_cache_entries)
    holder.history_source = TicketStore(engine).read_history_since
    outcome = holder.reload()
    if not outcome.ok:
        raise UserError(f"cannot load the model: {outcome.error}")
    holder.start_polling(settings.reload_poll_seconds)
    params = holder.bundle.metadata.get("params") or {}
    watcher = Watcher(settings, engine, lambda: holder.live, policy, destinations,
                      tuple(params.get("snapshots.closed_statuses") or ["closed"]))
    if once:
        report = watcher.tick()
        delivered = watcher.deliver_round()
        watcher.release()
        click.echo(f"tick: ran={report.ran} tickets={report.tickets} alerts_raised={report.alerts_raised} "
                   f"outcomes_checked={report.outcomes_checked} seconds={report.seconds:.2f}"
                   + (f" ({report.reason})" if report.reason else "") + f"; delivered {sum(delivered.values())}")
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if parent_pid is not None:
        def follow_parent() -> None:
            while not stop.wait(2.0):
                if os.getppid() != parent_pid:
                    stop.set()

        threading.Thread(target=follow_parent, name="follow-parent", daemon=True).start()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per job run
    click.echo(f"watching the open tickets in {engine.url.render_as_string(hide_password=True)} every "
               f"{settings.watch_interval_seconds:g} s; {len(destinations.destinations)} destination(s)")
    sys.stdout.flush()
    run_scheduled(watcher, settings, stop)


@commands.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="The history (default: the demo event log; for servicenow the shared export).")
@click.option("--source", type=click.Choice(["events", "servicenow", "mapping"]), default="events", show_default=True)
@click.option("--mapping", "mapping_path", type=click.Path(path_type=Path), default=None,
              help="Mapping file for --source mapping.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Model bundle (default: models/current).")
@click.option("--tick", default="5m", show_default=True, help="Simulated time between watch ticks.")
@click.option("--from", "start", default=None, help="First ticket creation date replayed (default: the bundle's "
              "test period start).")
@click.option("--to", "end", default=None, help="Replay tickets created before this date (default: all).")
@click.option("--until", default=None, help="Stop the simulated clock at this date: later events (and escalations) "
              "are left out (default: the last event).")
@click.option("--store", "store_url", default=None, help="Store URL for the replay (default: a temporary SQLite file).")
def replay(data_path: Path | None, source: str, mapping_path: Path | None, model_path: Path | None, tick: str,
           start: str | None, end: str | None, until: str | None, store_url: str | None) -> None:
    """Backtest: replay a history through the store and the watcher on a simulated clock, and compare
    the model's alerts with an SLA-timer rule and a supervisor-request rule at the same alert volumes."""
    import logging
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as under gunicorn: LightGBM on small batches, no oversubscription
    import pandas as pd

    from serving.live_model import ModelHolder
    from serving.policy import PolicyError, load_policy
    from serving.replay import (
        ReplayError,
        describe_replay_labels,
        evaluate_replay,
        evaluate_types,
        find_escalations,
        find_label_escalations,
        format_results,
        load_replay_events,
        parse_duration,
        replay_history,
        select_period,
    )
    from serving.watcher import label_rule

    # One replay process holds the lease for the whole simulated period (renewed once a simulated day).
    def utc_timestamp(text: str) -> pd.Timestamp:
        try:
            moment = pd.Timestamp(text)
        except ValueError as exc:
            raise UserError(f"not a date: {text!r}") from exc
        return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")

    settings = Settings(**({"model_path": model_path} if model_path else {}), mlflow_tracking_uri=None,
                        reload_poll_seconds=0, watch_lease_seconds=2 * 86400, watch_batch_size=5000)
    logging.getLogger("escalation_risk.watcher").setLevel(logging.WARNING)
    if data_path is None:
        data_path = settings.resolved_servicenow_path if source == "servicenow" else settings.resolved_data_path
    try:
        step = parse_duration(tick)
        policy = load_policy(settings.resolved_policy_path)
    except (ValueError, PolicyError) as exc:
        raise UserError(str(exc)) from exc
    if not settings.resolved_model_path.exists():
        raise UserError(f"no model at {settings.resolved_model_path}; run `make train` first or pass --model")
    try:
        from bundle.model import load_bundle

        metadata = load_bundle(settings.resolved_model_path).metadata
        first = start or ((metadata.get("data_window") or {}).get("test") or {}).get("created_from")
        began = time.perf_counter()
        events = select_period(load_replay_events(data_path, source, mapping_path),
                               utc_timestamp(first) if first else None, utc_timestamp(end) if end else None)
        if until:
            events = events.loc[events["event_time"] < utc_timestamp(until)].reset_index(drop=True)
        loaded = time.perf_counter() - began
        click.echo(f"replaying {len(events):,} events of {events['ticket_id'].nunique():,} tickets created from "
                   f"{first or 'the start'}{f' to {end}' if end else ''} ({source}, read in {loaded:.1f} s), "
                   f"tick {tick}, model {metadata.get('version')}", err=True)
        run = replay_history(events, ModelHolder(settings, settings.watch_text_cache_entries), policy, settings,
                             step, source=f"replay-{source}",
                             store_url=store_url,
                             progress=lambda k, n: click.echo(f"  tick {k:,}/{n:,}", err=True))
        escalations = find_escalations(events, label_rule(metadata))
        results = evaluate_replay(run, escalations)
        labels = describe_replay_labels(metadata)
        closing = (metadata.get("params") or {}).get("snapshots.closed_statuses") or ["closed"]
        by_type = evaluate_types(run, find_label_escalations(events, labels, closing, escalations), labels) \
            if labels else []
    except ReplayError as exc:
        raise UserError(str(exc)) from exc
    check = next(r for r in results if r.rule == "model" and r.threshold.startswith("alert line"))
    click.echo(f"\nperiod {run.period[0]:%Y-%m-%d %H:%M} .. {run.period[1]:%Y-%m-%d %H:%M} UTC; "
               f"{run.n_tickets:,} tickets, {run.n_events:,} events, {len(run.tick_times):,} ticks of {tick}; "
               f"escalations {check.escalations:,} (not counted: "
               f"{int((escalations['at_creation']).sum())} escalated at their first update)")
    label = label_rule(metadata)
    click.echo("escalation = " + (f"{label['counter']} reaches {label['min_rise']}" if label["rule"] == "counter_rise"
                                  else "escalation_level rises above 0") + " (the bundle's label event)")
    click.echo(format_results(results))
    if by_type:
        click.echo(f"\nby type (each label's own escalations; the primary, {labels[0].name}, first):")
        click.echo(format_results(by_type))
    click.echo(f"\nalerts raised by the store during the replay: {run.store_alerts} "
               f"(the model row at the alert line counts {check.alerts}); replay {run.seconds:.1f} s, "
               f"{run.n_events / run.seconds:,.0f} events/s overall (recording {run.seconds_recording:.1f} s: "
               f"{run.n_events / max(run.seconds_recording, 1e-9):,.0f} events/s; ticks {run.seconds - run.seconds_recording:.1f} s: "
               f"{len(run.observations) / max(run.seconds - run.seconds_recording, 1e-9):,.0f} ticket re-scores/s)")
