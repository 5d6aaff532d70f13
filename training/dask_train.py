"""The training step on a Dask cluster: the stages of training.train, run per ticket partition.

The event log is read as partitioned Parquet (or CSV blocks) and shuffled by ticket_id, so
each ticket's updates live in one partition; then every partition goes through the SAME
single-machine code (validate_events, build_snapshots, summarize_tickets) and its snapshots
are written back to Parquet in the work folder. Only small tables come back to the client:
one summary row per ticket (history facts, the time split, row counts) and the rejects.
The feature builder is fitted once on the client from the training rows and the gathered
ticket summaries (so history stays point-in-time across partitions), broadcast, and applied
per partition. Both models are fitted with lightgbm.dask; calibration, bands and metrics run
on the gathered validation and test predictions with the single-machine functions.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import dask
import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
from distributed import Client, Future, LocalCluster

from features.build import FeatureBuilder
from features.history import summarize_tickets
from features.schema import ValidationResult, check_reject_share, parse_times, validate_events
from features.snapshots import LABEL, PRIORITY_TARGET, SNAPSHOT_TIME, build_snapshots
from training import report
from training.config import ModelParams, Params
from training.split import SPLIT, split_by_time
from training.train import (
    TrainingResult,
    calibrate_and_band,
    choose_priority_classes,
    compute_importance,
    describe_fit,
    encode_priority,
    evaluate_test_period,
    fingerprint_file,
    fit_logistic_baseline,
    make_feature_builder,
    make_lightgbm_settings,
    predict_logistic,
    sample_training_tickets,
)

log = logging.getLogger(__name__)
SOURCE_ROW = "_source_row"
# Per-snapshot roles, looked up from the ticket: which part, and which model fits on it.
ROLE_COLUMNS = (SPLIT, "fit_escalation", "fit_priority")
PRIORITY_CODE = "_priority_code"
EVAL_METRIC = {"binary": "binary_logloss", "multiclass": "multi_logloss"}


@contextmanager
def open_client(scheduler_address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                memory_limit: str = "auto") -> Iterator[Client]:
    """A client of the cluster at `scheduler_address`, or of a LocalCluster of worker processes."""
    if scheduler_address:
        with Client(scheduler_address) as client:
            yield client
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                      memory_limit=memory_limit, dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def read_event_log_dask(events_path: Path, blocksize: str = "64MB") -> dd.DataFrame:
    """Parquet (a file's row groups or a folder's files become partitions) or CSV blocks, all as text for CSV."""
    events_path = Path(events_path)
    if not events_path.exists():
        raise FileNotFoundError(f"event log not found: {events_path}")
    if events_path.suffix == ".parquet" or events_path.is_dir():
        return dd.read_parquet(str(events_path), split_row_groups=True)
    compressed = events_path.suffix in (".gz", ".bz2", ".xz", ".zip")
    # Strings in, validate_events parses: the same coercions and rejects as the single-machine path.
    return dd.read_csv(str(events_path), dtype="string", blocksize=None if compressed else blocksize)


def find_data_end(raw: dd.DataFrame) -> pd.Timestamp:
    """The latest update time of a usable row (build_snapshots' `data_end`), over ALL partitions."""

    def partition_end(part: pd.DataFrame) -> pd.Series:
        event_time, created_at = parse_times(part["event_time"]), parse_times(part["created_at"])
        usable = part["ticket_id"].notna() & (event_time >= created_at).fillna(False)
        return pd.Series([event_time[usable].max()], dtype="datetime64[ns, UTC]")

    ends = raw[["ticket_id", "event_time", "created_at"]].map_partitions(
        partition_end, meta=pd.Series(dtype="datetime64[ns, UTC]")
    ).compute()
    return ends.max()


def prepare_partition(raw: pd.DataFrame, params: Params, data_end: pd.Timestamp, snapshots_path: Path,
                      index: int) -> dict:
    """One ticket partition through the single-machine code; snapshots go to Parquet, small tables come back."""
    source_rows = raw[SOURCE_ROW].to_numpy()
    raw = raw.drop(columns=SOURCE_ROW).reset_index(drop=True)
    validation = validate_events(raw, copy=False)
    rejects = validation.rejects
    if len(rejects):
        rejects["row"] = source_rows[rejects["row"].to_numpy(dtype="int64")]
    events = validation.events
    snapshots = build_snapshots(
        events,
        max_per_ticket=params.snapshots.max_per_ticket,
        closed_statuses=params.snapshots.closed_statuses,
        horizon_hours=params.label.horizon_hours,
        data_end=data_end,
        rule=params.label.rule,
        counter=params.label.counter,
        min_rise=params.label.min_rise,
    )
    tickets = summarize_tickets(events, params.snapshots.closed_statuses)
    # One schema for every part file: no object columns whose type depends on the values.
    snapshots = snapshots.astype({c: "string" for c in snapshots.columns if snapshots[c].dtype == object})
    snapshots.to_parquet(Path(snapshots_path) / f"part.{index:05d}.parquet", index=False)
    grouped = snapshots.groupby("ticket_id", sort=False)
    per_ticket = pd.DataFrame({
        "created_at": grouped["created_at"].first(),
        "snapshots": grouped.size(),
        "positives": grouped[LABEL].sum(),
    }).rename_axis("ticket_id").reset_index()
    return {"rejects": rejects, "tickets": tickets, "per_ticket": per_ticket, "n_input_rows": len(raw)}


def describe_split_tickets(per_ticket: pd.DataFrame) -> pd.DataFrame:
    """training.split.describe_split, from one row per ticket instead of every snapshot."""
    grouped = per_ticket.groupby(SPLIT, sort=False)
    table = pd.DataFrame({
        "tickets": grouped.size(),
        "snapshots": grouped["snapshots"].sum(),
        "positive_rate": grouped["positives"].sum() / grouped["snapshots"].sum(),
        "created_from": grouped["created_at"].min(),
        "created_to": grouped["created_at"].max(),
    })
    return table.reindex([p for p in ("train", "valid", "test") if p in table.index])


def assign_roles(snapshots: pd.DataFrame, roles: pd.DataFrame) -> pd.DataFrame:
    """Split and fit flags of each snapshot, looked up from its ticket (`roles` is indexed by ticket_id)."""
    looked_up = roles.reindex(snapshots["ticket_id"].astype("string").to_numpy())
    return snapshots.assign(**{c: looked_up[c].to_numpy() for c in ROLE_COLUMNS})


def build_partition_features(snapshots: pd.DataFrame, builder: FeatureBuilder, classes: list[str],
                             empty: pd.DataFrame | None = None) -> pd.DataFrame:
    """The builder's features plus the labels and roles, row for row (LightGBM needs X and y aligned).

    `empty`: what an empty partition gives (the text embedding refuses zero rows).
    """
    if empty is not None and len(snapshots) == 0:
        return empty
    features = builder.transform(snapshots)
    features[LABEL] = snapshots[LABEL].to_numpy(dtype="int8")
    features[PRIORITY_CODE] = encode_priority(snapshots[PRIORITY_TARGET], classes)
    for column in ROLE_COLUMNS:
        features[column] = snapshots[column].to_numpy()
    return features


def fit_lightgbm_dask(client: Client, model_params: ModelParams, x_train: dd.DataFrame, y_train: dd.Series,
                      x_valid: dd.DataFrame, y_valid: dd.Series, seed: int) -> lgb.DaskLGBMClassifier:
    """lightgbm.dask, with the best iteration read off the validation loss.

    lightgbm.dask has no early stopping (each worker sees only its share of the validation
    rows, so workers would stop at different rounds; LightGBM issues #3712, #6197): all
    n_estimators rounds are fitted while the validation loss is recorded, and the model is
    cut at its lowest, as early stopping would have kept it.
    """
    settings = make_lightgbm_settings(model_params, list(x_train.columns), seed, 1)
    settings.pop("n_jobs")  # lightgbm.dask gives each worker as many threads as it has cores
    model = lgb.DaskLGBMClassifier(client=client, **settings)
    if model_params.early_stopping_rounds is None:
        return model.fit(x_train, y_train)
    model.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], eval_names=["valid"])
    losses = model.evals_result_["valid"][EVAL_METRIC[model_params.objective]]
    # What early stopping sets: predict() and the bundle's save_model then use the best iteration.
    best = int(np.argmin(losses)) + 1
    model._best_iteration = best
    model.booster_.best_iteration = best
    return model


def train_models_dask(events_path: Path, params: Params, client: Client, work_dir: Path,
                      rejects_path: Path | None = None, n_partitions: int | None = None,
                      step_hook: Callable[[str], AbstractContextManager] | None = None) -> TrainingResult:
    """training.train.train_models on a Dask cluster; `work_dir` must be visible to every worker.

    `n_partitions`: ticket partitions after the shuffle (default: the input's, at least two per worker).
    """
    if params.escalation_model.recency_half_life_days is not None:
        raise ValueError("escalation_model.recency_half_life_days is not supported by the Dask engine yet; "
                         "remove it from the params file or train with --engine single")
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        started_at = time.perf_counter()
        with step_hook(name) if step_hook else nullcontext():
            yield
        timings[f"{name}_seconds"] = time.perf_counter() - started_at

    started = time.perf_counter()
    snapshots_path = Path(work_dir) / "snapshots"
    with stage("prepare"):
        fingerprint = fingerprint_file(events_path)
        raw = read_event_log_dask(events_path)
        data_end = find_data_end(raw)
        n_partitions = n_partitions or max(raw.npartitions, 2 * len(client.scheduler_info()["workers"]))
        raw = raw.assign(**{SOURCE_ROW: 1})
        raw[SOURCE_ROW] = raw[SOURCE_ROW].cumsum() - 1
        raw = raw.shuffle(on="ticket_id", npartitions=n_partitions)
        shutil.rmtree(snapshots_path, ignore_errors=True)
        snapshots_path.mkdir(parents=True)
        jobs = [dask.delayed(prepare_partition)(part, params, data_end, snapshots_path, i)
                for i, part in enumerate(raw.to_delayed())]
        outputs = dask.compute(*jobs)
        rejects = pd.concat([o["rejects"] for o in outputs], ignore_index=True)
        validation = ValidationResult(
            events=pd.DataFrame(),
            rejects=rejects.sort_values(["row", "column"], kind="stable").reset_index(drop=True),
            n_input_rows=sum(o["n_input_rows"] for o in outputs),
        )
        if rejects_path is not None:
            Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
            validation.rejects.to_csv(rejects_path, index=False)
        check_reject_share(validation, params.data.max_reject_share)
        # Sorted by ticket like the single-machine path's frames, so the same tickets are drawn.
        tickets = pd.concat([o["tickets"] for o in outputs], ignore_index=True)
        tickets = tickets.sort_values("ticket_id", kind="stable").reset_index(drop=True)
        per_ticket = pd.concat([o["per_ticket"] for o in outputs], ignore_index=True)
        per_ticket = per_ticket.sort_values("ticket_id", kind="stable").reset_index(drop=True)
        del outputs
        if per_ticket["positives"].sum() in (0, per_ticket["snapshots"].sum()):
            raise ValueError("the event log has no escalations (or only escalations) to learn from")
        per_ticket = split_by_time(per_ticket, params.split.train, params.split.valid)

    caps = {"escalation": params.escalation_model.max_train_rows, "priority": params.priority_model.max_train_rows}
    train_tickets = per_ticket.loc[per_ticket[SPLIT] == "train"]
    chosen = sample_training_tickets(train_tickets.set_index("ticket_id")["snapshots"], caps, params.seed)
    in_train = (per_ticket[SPLIT] == "train").to_numpy()
    for name, picked in chosen.items():
        per_ticket[f"fit_{name}"] = in_train if picked is None else in_train & per_ticket["ticket_id"].isin(picked)
    roles = per_ticket.set_index("ticket_id")[list(ROLE_COLUMNS)]
    snapshots = dd.read_parquet(str(snapshots_path)).map_partitions(
        assign_roles, client.scatter(roles, broadcast=True),
        meta=assign_roles(dd.read_parquet(str(snapshots_path))._meta, roles.iloc[:0]),
    )

    with stage("features"):
        fit_mask = snapshots["fit_escalation"] | snapshots["fit_priority"]
        fit_rows = snapshots[fit_mask].compute()
        fit_rows = fit_rows.sort_values(["ticket_id", SNAPSHOT_TIME], kind="stable").reset_index(drop=True)
        classes = choose_priority_classes(fit_rows[PRIORITY_TARGET])
        builder = make_feature_builder(params).fit(fit_rows, tickets)
        meta = build_partition_features(fit_rows.head(1), builder, classes).iloc[:0]
        del fit_rows
        builder_future: Future = client.scatter(builder, broadcast=True)

        def features_of(rows: dd.DataFrame) -> dd.DataFrame:
            return rows.map_partitions(build_partition_features, builder_future, classes, meta, meta=meta)

        names = builder.feature_names_
        # Filter first, then transform: each snapshot's features are built once, where it is used.
        train_x = features_of(snapshots[fit_mask])
        valid_x = features_of(snapshots[snapshots[SPLIT] == "valid"])
        train_x, valid_x = client.persist([train_x, valid_x])
        y_valid = valid_x[LABEL].compute().to_numpy()

    with stage("escalation_fit"):
        fit = train_x[train_x["fit_escalation"]]
        escalation = fit_lightgbm_dask(client, params.escalation_model, fit[names], fit[LABEL],
                                       valid_x[names], valid_x[LABEL], params.seed)
        raw_valid = escalation.predict_proba(valid_x[names])[:, 1].compute()
        calibration, thresholds = calibrate_and_band(raw_valid, y_valid, params)

    with stage("priority_fit"):
        fit = train_x[train_x["fit_priority"] & (train_x[PRIORITY_CODE] >= 0)]
        known_valid = valid_x[valid_x[PRIORITY_CODE] >= 0]
        priority = fit_lightgbm_dask(client, params.priority_model, fit[names], fit[PRIORITY_CODE],
                                     known_valid[names], known_valid[PRIORITY_CODE], params.seed)

    with stage("baseline_fit"):
        # The single-machine baseline draws at most 200,000 training rows: gather about that many.
        n_train = len(train_x)
        share = min(1.0, 200_000 / max(n_train, 1))
        sample = (train_x if share >= 1 else train_x.sample(frac=share, random_state=params.seed)).compute()
        logistic = fit_logistic_baseline(sample[names], sample[LABEL].to_numpy(), builder.categorical_features_,
                                         params.seed)
        del sample
        test = snapshots[snapshots[SPLIT] == "test"]
        test_rows, test_x = dask.compute(test, features_of(test)[names])
        test_rows, test_x = test_rows.reset_index(drop=True), test_x.reset_index(drop=True)
        logistic_prob = predict_logistic(logistic, test_x, builder.categorical_features_)

    escalation, priority = escalation.to_local(), priority.to_local()
    raw = {"valid": raw_valid, "test": escalation.predict_proba(test_x)[:, 1]}
    metrics, confusion, test_scores = evaluate_test_period(
        params, test_rows, y_valid, raw, calibration, thresholds, logistic_prob,
        priority.predict_proba(test_x), classes,
    )
    metrics |= describe_fit(escalation, priority, validation)
    timings["total_seconds"] = time.perf_counter() - started
    importance = compute_importance(escalation, test_x)
    return TrainingResult(
        params=params,
        data_fingerprint=fingerprint,
        validation=validation,
        # Only the test period comes back (the registry re-scores the champion on it); the
        # rest stays in the work folder's Parquet.
        snapshots=test_rows,
        tickets=tickets,
        builder=builder,
        escalation_model=escalation,
        priority_model=priority,
        priority_classes=classes,
        calibration=calibration,
        thresholds=thresholds,
        metrics=metrics,
        split_table=describe_split_tickets(per_ticket),
        importance=importance,
        confusion=confusion,
        test_scores=test_scores,
        timings=timings,
        driver_values=report.collect_driver_values(escalation, test_x, importance),
    )
