"""Training's commands of `escalation-risk` (assembled by cli.main): data, train, audit, report, batch score."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from cli.common import UserError
from features.settings import Settings

log = logging.getLogger("escalation_risk")


commands = click.Group("training", help="Training's commands (cli.main adds each to escalation-risk).")


@commands.command("generate-data")
@click.option("--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Where to write the event log (default: data/demo/events.parquet).")
@click.option("--tickets", "n_tickets", type=click.IntRange(min=10), default=20_000, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--start", default="2025-01-01", show_default=True, help="First arrival date (UTC).")
@click.option("--months", type=click.IntRange(min=1), default=12, show_default=True)
def generate_data(output_path: Path | None, n_tickets: int, seed: int, fmt: str, start: str, months: int) -> None:
    """Simulate a contact centre's ticket history (the demo data) as a canonical event log."""
    from features.synthetic import generate_event_log

    settings = Settings()
    output_path = output_path or settings.resolved_data_path.with_suffix(f".{fmt}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    summary = generate_event_log(output_path, n_tickets=n_tickets, seed=seed, fmt=fmt, start=start,
                                 months=months, progress=sys.stderr.isatty())
    click.echo(
        f"wrote {summary['rows']:,} updates of {summary['tickets']:,} tickets to {output_path} "
        f"(escalation rate {summary['escalation_rate']:.1%}, {summary['seconds']:.1f} s)"
    )


@commands.command("generate-export")
@click.option("--output", "output_path", type=click.Path(path_type=Path), required=True,
              help="CSV to write (.csv or .csv.gz).")
@click.option("--tickets", "n_tickets", type=click.IntRange(min=10), default=5_000, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--months", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--timezone", default="Europe/Amsterdam", show_default=True,
              help="Local time zone of the written times (IANA name).")
@click.option("--offsets/--no-offsets", default=True, show_default=True,
              help="ISO times with their UTC offset, or naive local wall-clock times (DST and all).")
@click.option("--numeric-levels", is_flag=True, help="Support level as 0/1/2 instead of L1/L2/L3.")
@click.option("--keep-priority", is_flag=True, help="Keep the priority column.")
@click.option("--keep-opened-at", is_flag=True, help="Keep the opening-time column.")
def generate_export(output_path: Path, n_tickets: int, seed: int, months: int, timezone: str, offsets: bool,
                    numeric_levels: bool, keep_priority: bool, keep_opened_at: bool) -> None:
    """Simulate a service-desk export the project has never seen (for trying init-mapping and mapping files)."""
    from features.synthetic import ExportOptions, simulate_export
    from features.times import check_timezone

    try:
        check_timezone(timezone)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    options = ExportOptions(text_levels=not numeric_levels, drop_priority=not keep_priority,
                            drop_created_at=not keep_opened_at, timezone=timezone, offsets=offsets)
    export = simulate_export(n_tickets, seed, months=months, options=options)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    export.to_csv(output_path, index=False)
    click.echo(f"wrote {len(export):,} updates of {export['Incident ID'].nunique():,} tickets to {output_path}")


@commands.command("init-mapping")
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True,
              help="The export (CSV or Parquet, one row per ticket update).")
@click.option("--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Draft mapping to write (default: <export name>.mapping.yaml beside the export).")
@click.option("--name", default=None, help="The mapping's name (default: from the export's file name).")
@click.option("--encoding", default="utf-8", show_default=True, help="The export's text encoding.")
@click.option("--delimiter", default=",", show_default=True, help="The export's field separator.")
@click.option("--force", is_flag=True, help="Overwrite an existing draft.")
def init_mapping(data_path: Path, output_path: Path | None, name: str | None, encoding: str, delimiter: str,
                 force: bool) -> None:
    """Profile an export and write a draft mapping file to review (docs/mapping-files.md)."""
    from pydantic import ValidationError

    from features.sources.draft import DraftError, draft_mapping, read_for_profile
    from features.sources.mapping import MappingError, ReadSpec

    stem = data_path.name.split(".")[0]
    output_path = output_path or data_path.with_name(f"{stem}.mapping.yaml")
    if output_path.exists() and not force:
        raise UserError(f"{output_path} exists; pass --force to overwrite it or --output another path")
    try:
        read = ReadSpec(encoding=encoding, delimiter=delimiter)
        draft = draft_mapping(read_for_profile(data_path, read), name or stem, read)
    except (DraftError, MappingError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    except ValidationError as exc:
        raise UserError(f"--encoding/--delimiter: {exc.errors(include_url=False)[0]['msg']}") from exc
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(draft.text)
    click.echo(f"ticket id: {draft.ticket_id}; update time: {draft.event_time}; opening time: "
               f"{draft.created_at or 'none (first_event)'}")
    click.echo(f"escalation candidates: levels {draft.level_candidates or '-'}, flags {draft.flag_candidates or '-'}, "
               f"teams {draft.team_candidates or '-'}")
    click.echo(f"look back-filled (audit.exclude): {', '.join(draft.backfilled) or 'none'}; "
               f"extras: {', '.join(draft.extras) or 'none'}")
    click.echo(f"draft: {output_path} — review the TODO lines, then:\n"
               f"  escalation-risk audit-data --mapping {output_path} --data {data_path}\n"
               f"  escalation-risk train --mapping {output_path} --data {data_path}")


SOURCE_PARAMS = {"servicenow": "params_servicenow.yaml"}


def _default_params_path(settings: Settings, source: str) -> Path:
    if settings.params_path is None and source in SOURCE_PARAMS:
        return Path(__file__).resolve().parent / SOURCE_PARAMS[source]
    return settings.resolved_params_path


def _import_source(source: str, data_path: Path | None, mapping_path: Path | None, params, settings: Settings):
    """A ServiceNow export or a mapped export -> (path, audited canonical rows, the params adopted for it)."""
    from features.schema import SchemaError
    from features.sources.mapping import MappingError, describe_labels, import_export, load_mapping
    from training.config import ParamsError, adopt_mapping

    if source == "mapping" and mapping_path is None:
        raise UserError("--source mapping needs --mapping FILE (see docs/mapping-files.md)")
    if source == "servicenow":
        data_path = data_path or settings.resolved_servicenow_path
    if data_path is None:
        raise UserError(f"--source {source} needs --data PATH (the export)")
    labels: dict[str, dict] = {}
    for label in params.list_labels():  # the audit scores each label's rule
        labels |= describe_labels(label.rule, label.counter, label.min_rise)
    try:
        mapping = load_mapping(mapping_path or source)
        imported = import_export(data_path, mapping, labels)
        return data_path, imported, adopt_mapping(params, mapping.closing_statuses, imported.feature_extras)
    except (MappingError, ParamsError, SchemaError, FileNotFoundError, KeyError) as exc:
        raise UserError(str(exc)) from exc


_SOURCE_OPTION = click.option("--source", type=click.Choice(["events", "servicenow", "mapping"]), default="events",
                              show_default=True, help="events: a canonical event log; servicenow: an incident "
                              "audit-log export; mapping: any export described by --mapping FILE.")
_MAPPING_OPTION = click.option("--mapping", "mapping_path", type=click.Path(path_type=Path), default=None,
                               help="Mapping file (YAML) for --source mapping, or to override the ServiceNow one.")


@commands.command("audit-data")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="The export (default for servicenow: ESCALATION_RISK_SERVICENOW_PATH or the shared copy).")
@_SOURCE_OPTION
@_MAPPING_OPTION
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="Params file whose label the audit checks (default per source).")
@click.option("--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="CSV of the audit table (default: reports/audit.csv).")
def audit_data(data_path: Path | None, source: str, mapping_path: Path | None, params_path: Path | None,
               output_path: Path | None) -> None:
    """Leakage audit of an export: flag back-filled and outcome columns (the importer leaves them out)."""
    from features.audit import format_audit_table
    from training.config import ParamsError, load_params

    settings = Settings()
    if source == "events":
        source = "mapping" if mapping_path else "servicenow"
    try:
        params = load_params(params_path or _default_params_path(settings, source))
    except ParamsError as exc:
        raise UserError(str(exc)) from exc
    data_path, imported, _ = _import_source(source, data_path, mapping_path, params, settings)
    click.echo(f"leakage audit of {data_path} (mapping {imported.mapping.name}):\n")
    click.echo(format_audit_table(imported.audit))
    output_path = output_path or settings.resolved_reports_dir / "audit.csv"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    imported.audit.to_csv(output_path, index=False)
    click.echo(f"\nflagged and left out by the importer ({len(imported.excluded)}): {', '.join(imported.excluded)}")
    if imported.mapping.audit.keep:
        click.echo(f"kept on purpose (mapping audit.keep): {', '.join(imported.mapping.audit.keep)}")
    click.echo(f"table: {output_path}")


_ENGINE_OPTION = click.option("--engine", type=click.Choice(["single", "dask"]), default="single", show_default=True,
                              help="single: pandas in this process; dask: the same pipeline on a Dask cluster.")
_SCHEDULER_OPTION = click.option("--scheduler", "scheduler_address", default=None, metavar="tcp://HOST:8786",
                                 help="Dask scheduler to use with --engine dask (default: a LocalCluster here).")
_WORKERS_OPTION = click.option("--workers", "n_workers", type=click.IntRange(min=1), default=2, show_default=True,
                               help="LocalCluster worker processes when no --scheduler is given.")


@contextmanager
def _dask_client(scheduler_address: str | None, n_workers: int):
    """A Dask client; an unreachable scheduler is a user error (exit 2), not a traceback."""
    from training.dask_train import open_client

    try:
        context = open_client(scheduler_address, n_workers)
        client = context.__enter__()
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"cannot reach the Dask scheduler at {scheduler_address}: {exc}") from exc
    try:
        yield client
    except BaseException:
        if not context.__exit__(*sys.exc_info()):
            raise
    else:
        context.__exit__(None, None, None)


@commands.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Event log or export (Parquet or CSV). Default: the demo data, generated if missing.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="Params file (default: training/params.yaml; params_servicenow.yaml for --source servicenow).")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None, help="Default: models/.")
@click.option("--no-mlflow", is_flag=True, help="Skip MLflow logging and registration.")
@_SOURCE_OPTION
@_MAPPING_OPTION
@_ENGINE_OPTION
@_SCHEDULER_OPTION
@_WORKERS_OPTION
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="--engine dask: folder for intermediate snapshots, visible to every worker "
                   "(default: reports/dask-work).")
@click.option("--extra-data", "extra_paths", type=click.Path(path_type=Path), multiple=True,
              help="More canonical event logs to train on, e.g. the ticket store's (`escalation-risk db export`); "
                   "a ticket in several keeps the rows of the last one given.")
@click.option("--cutoff", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Drop every event after this moment (UTC) from every input: train as of the cut-off.")
def train(data_path: Path | None, params_path: Path | None, models_dir: Path | None, no_mlflow: bool,
          source: str = "events", mapping_path: Path | None = None, engine: str = "single",
          scheduler_address: str | None = None, n_workers: int = 2, work_dir: Path | None = None,
          extra_paths: tuple[Path, ...] = (), cutoff=None) -> None:
    """Train, evaluate and register the escalation and priority models; write a bundle."""
    from features.history import count_tickets
    from features.schema import SchemaError
    from training.config import ParamsError, load_params
    from training.packaging import make_version, point_current, write_bundle
    from training.train import find_quality_problem, format_label_table, format_metrics_table, train_models

    settings = Settings()
    if mapping_path is not None and source == "events":
        source = "mapping"
    params_path = params_path or _default_params_path(settings, source)
    models_dir = models_dir or settings.resolved_models_dir
    try:
        params = load_params(params_path)
    except ParamsError as exc:
        raise UserError(str(exc)) from exc
    if source != "events":
        from features.sources.mapping import write_canonical

        export_path, imported, params = _import_source(source, data_path, mapping_path, params, settings)
        click.echo(f"imported {export_path} with mapping {imported.mapping.name}; left out by the leakage "
                   f"audit: {', '.join(imported.excluded) or 'nothing'}; extra features: "
                   f"{', '.join(params.features.extra_categorical) or 'none'}")
        data_path = write_canonical(imported.events, settings.resolved_reports_dir / f"{source}_events.parquet")
    if data_path is None:
        data_path = settings.resolved_data_path
        if not data_path.exists():
            click.echo(f"no event log at {data_path}: generating the demo ticket history first")
            click.get_current_context().invoke(generate_data, output_path=data_path)
    if extra_paths or cutoff is not None:
        data_path = _combine_inputs(data_path, list(extra_paths), cutoff, settings)
    if not no_mlflow:
        _check_tracking_store(settings)
    rejects_path = settings.resolved_reports_dir / "rejects.csv"
    rejects_path.unlink(missing_ok=True)
    try:
        if engine == "dask":
            from training.dask_train import train_models_dask

            with _dask_client(scheduler_address, n_workers) as client:
                click.echo(f"dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
                result = train_models_dask(data_path, params, client,
                                           work_dir or settings.resolved_reports_dir / "dask-work", rejects_path)
        else:
            result = train_models(data_path, params, rejects_path)
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        hint = f" (rejected rows and reasons: {rejects_path})" if _has_rows(rejects_path) else ""
        named = str(exc) if Path(data_path).name in str(exc) else f"{data_path}: {exc}"
        raise UserError(f"{named}{hint}") from exc

    click.echo(f"\ndata: {result.validation.n_input_rows:,} rows, {count_tickets(result.tickets):,} tickets, "
               f"{len(result.validation.rejects):,} rejects (written to {rejects_path})")
    click.echo(result.split_table.to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo("\n" + format_metrics_table(result.metrics))
    if labels_table := format_label_table(result):
        click.echo(f"\nper label (primary: {result.params.label.name}):\n{labels_table}")
    click.echo("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))

    if not no_mlflow:
        _check_tracking_server(settings, "after training, before writing or registering anything")
    bundle_dir = write_bundle(result, models_dir, make_version(result))
    click.echo(f"\nbundle: {bundle_dir}")
    report_dir = _write_report(bundle_dir, settings.resolved_reports_dir / bundle_dir.name)
    below_floor = find_quality_problem(result)
    promote = below_floor is None
    if not no_mlflow:
        from training.registry import log_and_register

        data_source = f"mapping:{mapping_path.stem}" if source == "mapping" and mapping_path else source
        registration = log_and_register(result, bundle_dir, settings, params_path, data_path, report_dir,
                                        data_source=data_source)
        promote = registration.champion
        click.echo(f"mlflow: run {registration.run_id} at {registration.tracking_uri}; "
                   f"registered {settings.registered_model_name} v{registration.model_version} (@challenger)")
        click.echo(("promoted to @champion: " if promote else "NOT promoted: ") + registration.reason)
    elif below_floor is not None:
        click.echo(f"NOT made current: below the quality floor: {below_floor}")
    current = models_dir / "current"
    if promote or (below_floor is None and not current.exists()):
        point_current(models_dir, bundle_dir)
        click.echo(f"{current} -> {bundle_dir.name}")


def _combine_inputs(data_path: Path, extra_paths: list[Path], cutoff, settings: Settings) -> Path:
    """The event logs in one file, every event after the cut-off dropped (training/combine.py)."""
    from datetime import UTC

    from training.combine import combine_event_logs

    try:
        combined, summary = combine_event_logs([data_path, *extra_paths],
                                               cutoff.replace(tzinfo=UTC) if cutoff is not None else None)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    for item in summary["inputs"]:
        click.echo(f"input {item['path']}: {item['rows']:,} rows, {item['rows_after_cutoff']:,} after the cut-off "
                   f"dropped, {item['tickets_kept']:,} of its {item['tickets']:,} tickets kept")
    path = settings.resolved_reports_dir / "combined_events.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    combined.to_parquet(path, index=False)
    click.echo(f"training on {summary['tickets']:,} tickets ({summary['rows']:,} rows) as of "
               f"{summary['cutoff'] or 'the newest event'}: {path}")
    return path


def _has_rows(csv_path: Path) -> bool:
    """Whether a CSV file exists and holds more than its header."""
    if not csv_path.exists():
        return False
    with open(csv_path, "rb") as handle:
        return sum(1 for _ in zip(range(2), handle, strict=False)) > 1


def _write_report(bundle_dir: Path, output_dir: Path) -> Path:
    from bundle.report import ReportError, write_report

    try:
        written = write_report(bundle_dir, output_dir)
    except ReportError as exc:
        raise UserError(str(exc)) from exc
    click.echo(f"report: {written['dir'] / 'report.html'} ({written['html_bytes']:,} bytes, "
               f"{written['seconds']:.1f} s)")
    return written["dir"]


@commands.command()
@click.option("--model-path", "bundle_path", type=click.Path(path_type=Path), default=None,
              help="Bundle folder (default: models/current).")
@click.option("--output", "output_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder (default: reports/<model version>/).")
def report(bundle_path: Path | None, output_dir: Path | None) -> None:
    """Write the ops leads' report (HTML, JSON, CSV) from a bundle's saved test-period predictions."""
    from bundle.report import ReportError, read_bundle_version

    settings = Settings()
    bundle_path = bundle_path or settings.resolved_models_dir / "current"
    try:
        version = read_bundle_version(bundle_path)
    except ReportError as exc:
        raise UserError(str(exc)) from exc
    _write_report(bundle_path, output_dir or settings.resolved_reports_dir / version)
def _check_tracking_store(settings: Settings) -> None:
    """Before training: the server answers, a SQLite store takes a write, the artifact folder takes a file.

    Raises UserError (exit 2) naming the problem, so a locked or read-only store is found before
    the run, not as a traceback after it.
    """
    from bundle.tracking import artifact_location_problem, sqlite_store_problem

    _check_tracking_server(settings, "before training")
    uri = settings.resolved_tracking_uri
    problem = sqlite_store_problem(uri)
    if problem is None:
        try:
            from mlflow import MlflowClient

            experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(settings.mlflow_experiment)
        except Exception as exc:  # any store failure: report it, do not train
            problem = f"the MLflow store {uri} cannot be read ({type(exc).__name__}: {str(exc)[:300]})"
        else:
            location = experiment.artifact_location if experiment is not None else (
                None if settings.mlflow_tracking_uri else settings.artifact_location)
            problem = artifact_location_problem(location)
    if problem:
        raise UserError(f"{problem}; found before training, nothing was trained or registered. Fix the MLflow "
                        "store, or pass --no-mlflow to train without it.")


def _check_tracking_server(settings: Settings, when: str) -> None:
    """Fail with a clear message (not minutes of MLflow retries, not a half-registered model)."""
    from bundle.tracking import tracking_server_problem

    problem = tracking_server_problem(settings.mlflow_tracking_uri)
    if problem:
        raise UserError(f"{problem} ({when}); nothing was registered and models/current is unchanged. "
                        "Start the server, or pass --no-mlflow to train without it.")


@commands.command()
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Open tickets as canonical rows (Parquet or CSV); the latest row per ticket is scored.")
@click.option("--output", "output_path", type=click.Path(path_type=Path), required=True,
              help="Parquet out (a Parquet folder with --engine dask).")
@click.option("--model", "bundle_path", type=click.Path(path_type=Path), default=None,
              help="Bundle folder (default: models/current).")
@_ENGINE_OPTION
@_SCHEDULER_OPTION
@_WORKERS_OPTION
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
def score(input_path: Path, output_path: Path, bundle_path: Path | None, engine: str = "single",
          scheduler_address: str | None = None, n_workers: int = 2, show_progress: bool | None = None) -> None:
    """Score open tickets in one batch: probability, band, priority and top reasons.

    Rows that fail validation are not scored; they come out with their reason in `error`.
    """
    from bundle.model import BundleError, load_bundle
    from training.batch_score import score_file_dask, score_frame, summarize_scores
    from training.train import read_event_log

    settings = Settings()
    show_progress = sys.stderr.isatty() if show_progress is None else show_progress
    try:
        bundle = load_bundle(bundle_path or settings.resolved_models_dir / "current")
    except BundleError as exc:
        raise UserError(str(exc)) from exc
    if engine == "dask":
        with _dask_client(scheduler_address, n_workers) as client:
            counts = score_file_dask(input_path, output_path, bundle, client, show_progress)
    else:
        scored = score_frame(read_event_log(input_path), bundle, show_progress=show_progress)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        scored.to_parquet(output_path, index=False)
        counts = summarize_scores(scored)
    click.echo(f"scored {counts['scored']:,} tickets with model {bundle.version}: {counts['high']:,} high, "
               f"{counts['escalate_now']:,} escalate now; {counts['rejected']:,} rejected (reason in `error`) "
               f"-> {output_path}")
