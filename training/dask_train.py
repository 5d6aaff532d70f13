"""The training step on a Dask cluster: the stages of training.train, run per ticket partition.

The event log is read as partitioned Parquet (or CSV blocks) and shuffled by ticket_id, so
each ticket's updates live in one partition; then every partition goes through the SAME
single-machine code (validate_events, build_snapshots, summarize_tickets) and its snapshots
are written back to Parquet in the work folder. Only small tables come back to the client:
one summary row per ticket (history facts, the time split, row counts) and the rejects.
The feature builder is fitted once on the client from the training rows and the gathered
ticket summaries (so history stays point-in-time across partitions), broadcast, and applied
per partition. Both models are fitted with lightgbm.dask, early-stopped on one validation
sample every worker scores (ValidationEarlyStopping); calibration, bands and metrics run on the
gathered validation and test predictions with the single-machine functions.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import dask
import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
from distributed import Client, Future, LocalCluster, get_worker
from scipy.special import logsumexp

from bundle import health, report
from bundle.model import apply_calibration
from features.build import FeatureBuilder
from features.history import summarize_tickets
from features.labels import add_label_outcomes, common_features, select_label_features
from features.schema import ValidationResult, check_reject_share, parse_times, validate_events
from features.snapshots import LABEL, PRIORITY_TARGET, SNAPSHOT_TIME, build_snapshots, find_outcome_times
from training.config import ModelParams, Params
from training.split import SPLIT, split_by_time
from training.train import (
    LabelResult,
    TrainingResult,
    calibrate_and_band,
    choose_priority_classes,
    compute_importance,
    count_ticket_rows,
    describe_fit,
    encode_priority,
    evaluate_label,
    evaluate_test_period,
    fingerprint_file,
    fit_logistic_baseline,
    make_feature_builder,
    make_lightgbm_settings,
    multiply_weights,
    predict_logistic,
    sample_training_tickets,
    weigh_by_recency,
    weigh_by_ticket,
)

log = logging.getLogger(__name__)
SOURCE_ROW = "_source_row"
EARLY_STOP = "early_stop_sample"
# Per-snapshot roles, looked up from the ticket: which part, which model fits on it, and
# whether it is in the validation sample every worker scores for early stopping.
ROLE_COLUMNS = (SPLIT, "fit_escalation", "fit_priority", EARLY_STOP)
PRIORITY_CODE = "_priority_code"
CREATED = "created_at"
TICKET_ROWS = "ticket_rows"
EVAL_METRIC = {"binary": "binary_logloss", "multiclass": "multi_logloss"}
# The task-based shuffle, not distributed's default P2P: P2P failed once in four runs on a 2-core
# machine ("P2P ... failed during unpack phase") on the same data; the task graph shuffle has no such
# phase and keeps every partition a plain task result.
SHUFFLE_METHOD = "tasks"


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
        closed_statuses=params.snapshots.closing,
        horizon_hours=params.label.horizon_hours,
        data_end=data_end,
        rule=params.label.rule,
        counter=params.label.counter,
        min_rise=params.label.min_rise,
        rise_type=params.label.rise_type,
    )
    tickets = summarize_tickets(events, params.snapshots.closing)
    rule = params.label.to_rule()
    if rule.own_outcome:  # the label's own as-of rates, as training.train adds them
        tickets = add_label_outcomes(
            tickets, {rule.name: find_outcome_times(events, rule, params.snapshots.closing, data_end)})
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
    features[CREATED] = snapshots[CREATED].to_numpy()  # for recency weights
    # For ticket weights: a ticket's snapshots all live in this partition (the log is shuffled by ticket).
    features[TICKET_ROWS] = count_ticket_rows(snapshots["ticket_id"])
    for column in ROLE_COLUMNS:
        features[column] = snapshots[column].to_numpy()
    return features


class ValidationEarlyStopping:
    """LightGBM callback: early stopping on one validation sample that every worker scores in full.

    lightgbm.dask has no early stopping of its own: each worker would evaluate only its share
    of the validation rows and stop at its own round, leaving the others waiting on the
    network (LightGBM issues #3712, #6197). Data-parallel workers hold identical trees, so when
    every worker reads the SAME rows (`sample_path`, Parquet on storage all workers see) they
    compute the same loss and stop at the same round. The loss is LightGBM's metric for the
    objective (binary_logloss, multi_logloss), kept incremental: each round adds only the
    newest tree's raw score. Stopping follows lightgbm.early_stopping (strict improvement,
    `stopping_rounds` without one), and each worker logs where it stopped to `topic`.
    """

    order = 30  # where lightgbm.early_stopping runs
    before_iteration = False

    def __init__(self, sample_path: Path, feature_names: list[str], target: str, objective: str,
                 stopping_rounds: int, topic: str):
        self.sample_path, self.feature_names, self.target = str(sample_path), list(feature_names), target
        self.objective, self.stopping_rounds, self.topic = objective, stopping_rounds, topic

    def _load(self, booster: lgb.Booster) -> None:
        """The sample as LightGBM's own pandas conversion gives it: category codes by the training categories."""
        sample = pd.read_parquet(self.sample_path, columns=[*self.feature_names, self.target])
        sample = sample.loc[sample[self.target].to_numpy() >= 0]  # priority: known levels only
        columns = []
        categories = iter(booster.pandas_categorical or [])
        for name in self.feature_names:
            column = sample[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                codes = column.cat.set_categories(next(categories)).cat.codes.to_numpy()
                column = np.where(codes < 0, np.nan, codes)
            columns.append(np.asarray(column, dtype=np.float32))
        self.x_ = np.column_stack(columns) if columns else np.empty((len(sample), 0), np.float32)
        self.y_ = sample[self.target].to_numpy(dtype="int64")
        self.raw_: np.ndarray | float = 0.0
        self.best_loss_, self.best_iteration_ = np.inf, 0

    def loss(self, raw: np.ndarray) -> float:
        if self.objective == "multiclass":
            return float(np.mean(logsumexp(raw, axis=1) - raw[np.arange(len(raw)), self.y_]))
        return float(np.mean(np.logaddexp(0.0, raw) - self.y_ * raw))

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if env.iteration == env.begin_iteration:
            self._load(env.model)
        self.raw_ = self.raw_ + env.model.predict(self.x_, start_iteration=env.iteration, num_iteration=1,
                                                  raw_score=True)
        loss = self.loss(self.raw_)
        if loss < self.best_loss_:
            self.best_loss_, self.best_iteration_ = loss, env.iteration
        if env.iteration - self.best_iteration_ >= self.stopping_rounds or env.iteration == env.end_iteration - 1:
            self._report(env.iteration)
            best = [lgb.EvalResult("valid", EVAL_METRIC[self.objective], self.best_loss_, False)]
            raise lgb.callback.EarlyStopException(self.best_iteration_, best)

    def _report(self, iteration: int) -> None:
        try:
            worker = get_worker()
        except ValueError:  # not on a Dask worker (a plain LightGBM fit)
            return
        worker.log_event(self.topic, {"worker": worker.address, "stopped_at": iteration + 1,
                                      "best_iteration": self.best_iteration_ + 1, "best_loss": self.best_loss_,
                                      "rows": len(self.y_)})


def read_stop_reports(client: Client, topic: str, n_workers: int, wait_seconds: float = 10.0) -> list[dict]:
    """Each worker's early-stopping report (the scheduler receives them just before the results)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        reports = [message for _, message in client.get_events(topic)]
        if len(reports) >= n_workers or time.monotonic() > deadline:
            return reports
        time.sleep(0.1)


def fit_lightgbm_dask(client: Client, model_params: ModelParams, x_train: dd.DataFrame, y_train: dd.Series,
                      seed: int, sample_weight: dd.Series | None = None,
                      stopping: ValidationEarlyStopping | None = None) -> lgb.DaskLGBMClassifier:
    """lightgbm.dask, early-stopped by `stopping` (None: all n_estimators rounds).

    Every worker must stop at the same round, or the others wait on the network: the workers'
    reports are checked and a disagreement is an error.
    """
    settings = make_lightgbm_settings(model_params, list(x_train.columns), seed, 1)
    settings.pop("n_jobs")  # lightgbm.dask gives each worker as many threads as it has cores
    model = lgb.DaskLGBMClassifier(client=client, **settings)
    if stopping is None:
        return model.fit(x_train, y_train, sample_weight=sample_weight)
    # kwargs reach each worker's LGBMClassifier.fit; each worker gets its own copy of the callback.
    model.fit(x_train, y_train, sample_weight=sample_weight, callbacks=[stopping])
    reports = read_stop_reports(client, stopping.topic, len(client.scheduler_info()["workers"]))
    if len({(r["stopped_at"], r["best_iteration"]) for r in reports}) > 1:
        raise RuntimeError(f"Dask workers stopped at different rounds: {reports}")
    model.early_stopping_reports_ = reports
    log.info("%s: best iteration %s of %s (workers: %s)", model_params.objective, model.best_iteration_,
             model_params.n_estimators, reports)
    return model


def make_stopping(model_params: ModelParams, sample_path: Path, feature_names: list[str],
                  target: str) -> ValidationEarlyStopping | None:
    if model_params.early_stopping_rounds is None:
        return None
    return ValidationEarlyStopping(sample_path, feature_names, target, model_params.objective,
                                   model_params.early_stopping_rounds, f"early-stopping-{uuid.uuid4().hex}")


def gather_frames(client: Client, *frames: dd.DataFrame | dd.Series) -> list[pd.DataFrame | pd.Series]:
    """Each frame's partitions computed together, sent to the client and concatenated there, in order.

    `compute()` first concatenates all partitions into one on a worker, so that worker must hold
    the whole result: a 5,000,000-ticket history's test period (rows with their texts) outgrows
    a worker's memory limit, and the worker is restarted.
    """
    delayed = [frame.to_delayed() for frame in frames]
    parts = client.gather(client.compute([d for ds in delayed for d in ds]))
    out, start = [], 0
    for ds, frame in zip(delayed, frames, strict=True):
        chunk, start = parts[start:start + len(ds)], start + len(ds)
        out.append(pd.concat(chunk) if chunk else frame._meta)
    return out


def take_head(frame: dd.DataFrame, n_rows: int) -> pd.DataFrame:
    """The first `n_rows` rows, computing partitions one at a time (dd.head computes all or one)."""
    parts, n = [], 0
    for i in range(frame.npartitions):
        if n >= n_rows:
            break
        parts.append(frame.partitions[i].compute())
        n += len(parts[-1])
    return pd.concat(parts).head(n_rows).reset_index(drop=True)


def weigh_partition(rows: pd.DataFrame, half_life_days: float | None, ticket_weights: str | None,
                    newest: pd.Timestamp | None) -> pd.Series:
    """training.train's recency and ticket weights on one partition, against the newest creation time of all."""
    by_ticket = weigh_by_ticket(rows[TICKET_ROWS].to_numpy(), ticket_weights) if ticket_weights else None
    weights = multiply_weights(weigh_by_recency(rows[CREATED], half_life_days, newest), by_ticket)
    return pd.Series(weights, index=rows.index, dtype="float64")


def weigh_rows_dask(rows: dd.DataFrame, model_params) -> dd.Series | None:
    """Weights of the fit rows (`created_at`, `ticket_rows`), partition-wise, equal to the single path's."""
    half_life, ticket_weights = model_params.recency_half_life_days, model_params.ticket_weights
    if half_life is None and ticket_weights is None:
        return None
    newest = rows[CREATED].max().compute() if half_life is not None else None
    return rows.map_partitions(weigh_partition, half_life, ticket_weights, newest, meta=(None, "float64"))


def score_test_partition(features: pd.DataFrame, names: list[str], escalation: lgb.LGBMClassifier,
                         priority: lgb.LGBMClassifier | None, logistic, categorical: list[str],
                         importance: pd.DataFrame, max_contribution_rows: int | None = None,
                         priority_names: list[str] | None = None) -> pd.DataFrame:
    """One test partition's predictions and top-driver values, so the feature matrix stays on the workers.

    `names`: the escalation model's columns; `priority_names`: the priority model's (default the same)."""
    x = features[names].reset_index(drop=True)
    out = pd.DataFrame({"raw": escalation.predict_proba(x)[:, 1] if len(x) else np.empty(0),
                        "logistic": predict_logistic(logistic, x, categorical) if len(x) else np.empty(0)})
    if priority is None:  # no priority target
        probabilities = np.empty((len(x), 0))
    else:
        x_priority = x if priority_names is None else features[priority_names].reset_index(drop=True)
        probabilities = priority.predict_proba(x_priority) if len(x) else np.empty((0, len(priority.classes_)))
    for i in range(probabilities.shape[1]):
        out[f"priority_{i}"] = probabilities[:, i]
    return pd.concat([out, report.collect_driver_values(escalation, x, importance,
                                                        max_contribution_rows=max_contribution_rows)], axis=1)


def train_models_dask(events_path: Path, params: Params, client: Client, work_dir: Path,
                      rejects_path: Path | None = None, n_partitions: int | None = None,
                      step_hook: Callable[[str], AbstractContextManager] | None = None) -> TrainingResult:
    """training.train.train_models on a Dask cluster; `work_dir` must be visible to every worker.

    `n_partitions`: ticket partitions after the shuffle (default: the input's, at least two per worker).
    """
    skipped = {}
    if len(params.list_labels()) > 1:
        # Not built yet: several labels on Dask. The primary is trained as it would be alone.
        skipped = {label.name: "the Dask engine trains the primary label only (use --engine single for every label)"
                   for label in params.list_labels()[1:]}
        log.warning("dask engine: training the primary label %s only; not trained: %s", params.label.name,
                    ", ".join(skipped))
        params = params.select_label(params.label.name)
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
        raw = raw.shuffle(on="ticket_id", npartitions=n_partitions, shuffle_method=SHUFFLE_METHOD)
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
    # The early-stopping sample: whole validation tickets, drawn as the training rows are, up to the cap.
    in_valid = (per_ticket[SPLIT] == "valid").to_numpy()
    valid_sizes = per_ticket.loc[in_valid].set_index("ticket_id")["snapshots"]
    picked = sample_training_tickets(valid_sizes, {"valid": params.dask.early_stopping_rows}, params.seed)["valid"]
    per_ticket[EARLY_STOP] = in_valid if picked is None else in_valid & per_ticket["ticket_id"].isin(picked)
    roles = per_ticket.set_index("ticket_id")[list(ROLE_COLUMNS)]
    snapshots = dd.read_parquet(str(snapshots_path)).map_partitions(
        assign_roles, client.scatter(roles, broadcast=True),
        meta=assign_roles(dd.read_parquet(str(snapshots_path))._meta, roles.iloc[:0]),
    )

    with stage("features"):
        fit_mask = snapshots["fit_escalation"] | snapshots["fit_priority"]
        (fit_rows,) = gather_frames(client, snapshots[fit_mask])
        fit_rows = fit_rows.sort_values(["ticket_id", SNAPSHOT_TIME], kind="stable").reset_index(drop=True)
        classes = choose_priority_classes(fit_rows[PRIORITY_TARGET])
        builder = make_feature_builder(params).fit(fit_rows, tickets)
        meta = build_partition_features(fit_rows.head(1), builder, classes).iloc[:0]
        del fit_rows
        builder_future: Future = client.scatter(builder, broadcast=True)

        def features_of(rows: dd.DataFrame) -> dd.DataFrame:
            return rows.map_partitions(build_partition_features, builder_future, classes, meta, meta=meta)

        all_names = builder.feature_names_
        # The label's columns (its own outcome rates, if any) and the priority model's (shared ones).
        names = select_label_features(all_names, params.label.to_rule(), params.label.exclude)
        priority_names = common_features(all_names)
        # Filter first, then transform: each snapshot's features are built once, where it is used.
        train_x = features_of(snapshots[fit_mask])
        valid_x = features_of(snapshots[snapshots[SPLIT] == "valid"])
        train_x, valid_x = client.persist([train_x, valid_x])
        (y_valid,) = gather_frames(client, valid_x[LABEL])
        y_valid = y_valid.to_numpy()
        # Written by the workers to the shared work folder; each worker reads all of it to early-stop.
        sample_path = Path(work_dir) / "early_stopping_sample"
        shutil.rmtree(sample_path, ignore_errors=True)
        valid_x[valid_x[EARLY_STOP]][[*all_names, LABEL, PRIORITY_CODE]].to_parquet(str(sample_path),
                                                                                   write_index=False)

    with stage("escalation_fit"):
        fit = train_x[train_x["fit_escalation"]]
        escalation = fit_lightgbm_dask(
            client, params.escalation_model, fit[names], fit[LABEL], params.seed,
            weigh_rows_dask(fit[[CREATED, TICKET_ROWS]], params.escalation_model),
            make_stopping(params.escalation_model, sample_path, names, LABEL),
        )
        raw_valid = escalation.predict_proba(valid_x[names])[:, 1].compute()
        calibration, thresholds = calibrate_and_band(raw_valid, y_valid, params)

    with stage("priority_fit"):
        priority = None
        if classes:
            fit = train_x[train_x["fit_priority"] & (train_x[PRIORITY_CODE] >= 0)]
            priority = fit_lightgbm_dask(client, params.priority_model, fit[priority_names], fit[PRIORITY_CODE],
                                         params.seed, stopping=make_stopping(params.priority_model, sample_path,
                                                                             priority_names, PRIORITY_CODE))

    with stage("baseline_fit"):
        # The single-machine baseline draws at most 200,000 training rows: gather about that many.
        n_train = len(train_x)
        share = min(1.0, 200_000 / max(n_train, 1))
        sample = (train_x if share >= 1 else train_x.sample(frac=share, random_state=params.seed)).compute()
        categorical = [c for c in builder.categorical_features_ if c in names]
        logistic = fit_logistic_baseline(sample[names], sample[LABEL].to_numpy(), categorical, params.seed)
        # The same sample of training rows is the drift reference (the service's PSI reads it).
        reference = health.describe_reference(sample[all_names], apply_calibration(calibration, raw_valid),
                                              params.monitoring.psi_bins, params.monitoring.reference_rows,
                                              params.seed)
        # Release the persisted training and validation features before the test period is built.
        del sample, fit, train_x, valid_x
        escalation = escalation.to_local()
        priority = priority.to_local() if priority is not None else None
        # The test period's features stay on the workers: only its rows (the registry re-scores
        # the champion on them), predictions and top-driver values come back.
        test = snapshots[snapshots[SPLIT] == "test"]
        test_features = features_of(test)
        importance = compute_importance(escalation, take_head(test_features[names], 20_000))
        models = client.scatter([escalation, priority, logistic, importance], broadcast=True)
        scored_meta = score_test_partition(meta, names, escalation, priority, logistic, categorical, importance,
                                           None, priority_names)
        # Each partition explains its share of the report's sample of test rows.
        per_partition = max(1, -(-report.CONTRIBUTION_ROWS // max(test_features.npartitions, 1)))
        scored = test_features.map_partitions(score_test_partition, names, *models[:3], categorical, models[3],
                                              per_partition, priority_names, meta=scored_meta)
        test_rows, scored = gather_frames(client, test, scored)
        test_rows, scored = test_rows.reset_index(drop=True), scored.reset_index(drop=True)

    raw = {"valid": raw_valid, "test": scored["raw"].to_numpy()}
    priority_prob = scored[[f"priority_{i}" for i in range(len(classes))]].to_numpy() if classes else None
    metrics, confusion, test_scores = evaluate_test_period(
        params, test_rows, y_valid, raw, calibration, thresholds, scored["logistic"].to_numpy(),
        priority_prob, classes,
    )
    metrics |= describe_fit(escalation, priority, validation)
    label_metrics, _ = evaluate_label(params, test_rows, test_rows[LABEL].to_numpy(), y_valid, raw, calibration,
                                      thresholds, scored["logistic"].to_numpy())
    label_metrics["best_iteration"] = metrics["best_iteration_escalation"]
    metrics |= {f"label.{params.label.name}.{k}": v for k, v in label_metrics.items()}
    driver_values = scored[[c for c in scored.columns if c.startswith(("value__", "contribution__"))]]
    timings["total_seconds"] = time.perf_counter() - started
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
        reference=reference,
        driver_values=driver_values,
        labels=[LabelResult(label=params.label, model=escalation, features=names, calibration=calibration,
                            thresholds=thresholds, metrics=label_metrics, importance=importance,
                            test_scores=test_scores, driver_values=driver_values,
                            valid_probability=apply_calibration(calibration, raw_valid))],
        priority_features=priority_names if priority_names != all_names else None,
        skipped_labels=skipped,
    )
