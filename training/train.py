"""Event log in, trained and evaluated models out: the single-machine training step.

Order matters for honesty: validate -> snapshots (labels look forward) -> split by time ->
fit the feature builder on the training period only -> fit models with early stopping on
the validation period -> calibrate and choose bands on the validation period -> measure
on the test period, beside baselines.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from bundle import evaluate, health, report
from bundle.model import apply_calibration, assign_bands, fit_calibration
from features.build import FeatureBuilder
from features.history import summarize_tickets
from features.labels import add_label_outcomes, common_features, label_column, select_label_features
from features.schema import (
    PRIORITY_ORDER,
    TEXT_COLUMNS,
    ValidationResult,
    check_reject_share,
    read_event_log,
    validate_events,
)
from features.snapshots import LABEL, POSITION, PRIORITY_TARGET, build_label_snapshots, find_outcome_times
from training.case_mix import CaseMixResult, fit_case_mix
from training.config import LabelParams, ModelParams, Params
from training.split import SPLIT, describe_split, split_by_time
from training.thresholds import choose_thresholds

log = logging.getLogger(__name__)


@dataclass
class LabelResult:
    """One label's model and everything measured about it (training.train trains one per label)."""

    label: LabelParams
    model: lgb.LGBMClassifier
    features: list[str]          # the columns of the shared feature matrix it uses, in order
    calibration: dict
    thresholds: dict[str, float]
    metrics: dict[str, float]    # unprefixed (test_roc_auc, baseline_logistic_roc_auc, ...)
    importance: pd.DataFrame
    test_scores: pd.DataFrame    # the test rows the label asks about
    driver_values: pd.DataFrame = field(default_factory=pd.DataFrame)
    escalation_type: str | None = None  # the kind it stands for (default: its label's)
    valid_probability: np.ndarray | None = None  # calibrated, on the validation rows it asks about

    def __post_init__(self) -> None:
        self.escalation_type = self.escalation_type or self.label.escalation_type

    @property
    def name(self) -> str:
        return self.label.name


@dataclass
class TrainingResult:
    """The primary label's model in the escalation_* fields (as before labels were a list); every
    label's, the primary first, in `labels`. `metrics` holds the primary's metrics unprefixed and
    each label's as `label.<name>.<metric>`."""

    params: Params
    data_fingerprint: str
    validation: ValidationResult
    snapshots: pd.DataFrame
    tickets: pd.DataFrame
    builder: FeatureBuilder
    escalation_model: lgb.LGBMClassifier
    priority_model: lgb.LGBMClassifier | None  # None: the export has no priority target (fewer than 2 levels)
    priority_classes: list[str]
    calibration: dict
    thresholds: dict[str, float]
    metrics: dict[str, float]
    split_table: pd.DataFrame
    importance: pd.DataFrame
    confusion: pd.DataFrame
    test_scores: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    driver_values: pd.DataFrame = field(default_factory=pd.DataFrame)  # top drivers on test rows, for the report
    case_mix: CaseMixResult | None = None  # the against-case-mix model and the test period's tickets
    reference: dict | None = None  # training distribution of features and score (bundle/health.py)
    labels: list[LabelResult] = field(default_factory=list)
    priority_features: list[str] | None = None  # None = every feature of the builder
    skipped_labels: dict[str, str] = field(default_factory=dict)  # label -> why it was not trained


def fingerprint_file(path: Path) -> str:
    """sha256 of the input's bytes, so a run names exactly the data it saw."""
    digest = hashlib.sha256()
    paths = sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]
    for p in paths:
        if p.is_file():
            with open(p, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def make_lightgbm_settings(model_params, feature_names: list[str], seed: int, num_threads: int) -> dict:
    """LGBMClassifier keyword arguments, monotone constraints included (shared by both engines)."""
    settings = model_params.lightgbm_params(seed, num_threads)
    constraints = model_params.monotone_constraints(list(feature_names))
    if constraints is not None:
        settings["monotone_constraints"] = constraints
    return settings


def weigh_by_recency(created_at: pd.Series, half_life_days: float | None,
                     newest: pd.Timestamp | None = None) -> np.ndarray | None:
    """Newer tickets count more when the log drifts; None = equal weights.

    `newest`: the creation time that weighs 1 (default the newest in `created_at`); the Dask
    engine passes the newest over all partitions so each partition is weighed alike.
    """
    if half_life_days is None:
        return None
    newest = created_at.max() if newest is None else newest
    age_days = (newest - created_at) / pd.Timedelta(days=1)
    return np.power(0.5, age_days.to_numpy(dtype="float64") / half_life_days)


def count_ticket_rows(ticket_ids: pd.Series) -> np.ndarray:
    """Per row, how many rows its ticket has (here)."""
    return ticket_ids.groupby(ticket_ids.to_numpy(), sort=False).transform("size").to_numpy(dtype="float32")


def weigh_by_ticket(ticket_rows: np.ndarray, ticket_weights: str | None) -> np.ndarray | None:
    """1 / (the ticket's number of rows) with "equal"; None = every snapshot counts alike."""
    if ticket_weights is None:
        return None
    return 1.0 / ticket_rows.astype("float64")


def multiply_weights(*weights: np.ndarray | None) -> np.ndarray | None:
    """The product of the weightings in use; None when none is."""
    used = [w for w in weights if w is not None]
    return np.prod(used, axis=0) if used else None


def fit_lightgbm(model_params, x_train, y_train, x_valid, y_valid, seed: int, num_threads: int,
                 sample_weight: np.ndarray | None = None) -> lgb.LGBMClassifier:
    model = lgb.LGBMClassifier(**make_lightgbm_settings(model_params, list(x_train.columns), seed, num_threads))
    if model_params.early_stopping_rounds is None:
        return model.fit(x_train, y_train, sample_weight=sample_weight)
    model.fit(
        x_train,
        y_train,
        sample_weight=sample_weight,
        eval_X=x_valid,
        eval_y=y_valid,
        callbacks=[lgb.early_stopping(model_params.early_stopping_rounds, verbose=False)],
    )
    return model


def fit_logistic_baseline(x_train: pd.DataFrame, y_train: np.ndarray, categorical: list[str], seed: int,
                          max_rows: int = 200_000):
    """The linear baseline the boosted model has to beat, on the same features."""
    if len(x_train) > max_rows:
        pick = np.random.default_rng(seed).choice(len(x_train), max_rows, replace=False)
        x_train, y_train = x_train.iloc[np.sort(pick)], y_train[np.sort(pick)]
    numeric = [c for c in x_train.columns if c not in categorical]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
            ]
        ),
        LogisticRegression(max_iter=1000, C=1.0),
    )
    return model.fit(_as_objects(x_train, categorical), y_train)


def _as_objects(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), "missing") for c in categorical})


def predict_logistic(model, features: pd.DataFrame, categorical: list[str], chunk_rows: int = 100_000) -> np.ndarray:
    """Scored in chunks: one-hot encoding a whole test period at once would dominate peak memory."""
    return np.concatenate([
        model.predict_proba(_as_objects(features.iloc[i : i + chunk_rows], categorical))[:, 1]
        for i in range(0, len(features), chunk_rows)
    ])


def compute_importance(model: lgb.LGBMClassifier, features: pd.DataFrame, max_rows: int = 20_000) -> pd.DataFrame:
    """Gain and mean |per-prediction contribution| (log-odds), the two views the report shows."""
    booster = model.booster_
    sample = features.iloc[:max_rows]
    contrib = booster.predict(sample, pred_contrib=True)[:, :-1]
    table = pd.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split"),
            "mean_abs_contribution": np.abs(contrib).mean(axis=0),
        }
    )
    table["gain_share"] = table["gain"] / max(table["gain"].sum(), 1e-12)
    return table.sort_values("mean_abs_contribution", ascending=False).reset_index(drop=True)


def prepare_snapshots(events_path: Path, params: Params, rejects_path: Path | None = None
                      ) -> tuple[ValidationResult, pd.DataFrame, pd.DataFrame]:
    """Validate (writing every rejected row with its reason first), then snapshot, summarise and split."""
    raw = read_event_log(events_path)
    validation = validate_events(raw, copy=False)
    del raw
    if rejects_path is not None:
        Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
        validation.rejects.to_csv(rejects_path, index=False)
    check_reject_share(validation, params.data.max_reject_share)
    events = validation.events
    # Each ticket repeats its texts on every update: store each distinct text once.
    for column in TEXT_COLUMNS:
        events[column] = events[column].astype("category")
    rules = [label.to_rule() for label in params.list_labels()]
    snapshots = build_label_snapshots(
        events,
        rules,
        max_per_ticket=params.snapshots.max_per_ticket,
        closed_statuses=params.snapshots.closing,
    )
    # Outcome only, for the report's segments; never a feature.
    snapshots[report.ESCALATION_TYPE] = snapshots["ticket_id"].map(report.find_escalation_types(events)).astype("category")
    check_enough_data(snapshots, params)
    tickets = summarize_tickets(events, params.snapshots.closing)
    # Each label with its own outcome gets as-of rates of that outcome (features.labels).
    own = {rule.name: find_outcome_times(events, rule, params.snapshots.closing)
           for rule in rules if rule.own_outcome}
    if own:
        tickets = add_label_outcomes(tickets, own)
    # The full log is no longer needed: free it before features double the footprint.
    validation.events = events.iloc[0:0]
    del events
    snapshots = split_by_time(snapshots, params.split.train, params.split.valid)
    check_each_part(snapshots)
    return validation, snapshots, tickets


class NotEnoughData(ValueError):
    """Too few tickets or escalations to train on; the message names the counts and the params keys."""


def check_enough_data(snapshots: pd.DataFrame, params: Params) -> None:
    """Stop before fitting when the log is too small to learn from (params data.min_tickets,
    data.min_positive_tickets); the counts are of tickets with snapshots whose outcome is known
    (of the primary label: -1 marks a row only other labels ask about)."""
    n_tickets = int(snapshots.loc[snapshots[LABEL] >= 0, "ticket_id"].nunique())
    n_positive = int(snapshots.loc[snapshots[LABEL] == 1, "ticket_id"].nunique())
    problems = []
    if n_tickets < params.data.min_tickets:
        problems.append(f"{n_tickets:,} tickets with a known outcome (data.min_tickets: {params.data.min_tickets:,})")
    if n_positive < params.data.min_positive_tickets:
        problems.append(f"{n_positive:,} tickets that escalate (data.min_positive_tickets: "
                        f"{params.data.min_positive_tickets:,})")
    if problems:
        raise NotEnoughData("too little to learn from: " + "; ".join(problems) + ". Check the escalation rule and "
                            "the closing statuses (a mapping's escalation and closing_statuses), or give more history")


def check_each_part(snapshots: pd.DataFrame) -> None:
    """Each time period needs both outcomes: early stopping, calibration and the test need them."""
    for part in ("train", "valid", "test"):
        labels = snapshots.loc[snapshots[SPLIT] == part, LABEL]
        labels = labels[labels >= 0]  # the primary label's rows
        if labels.nunique() < 2:
            raise NotEnoughData(f"the {part} period ({len(labels):,} snapshots) has {int(labels.sum()):,} "
                                "escalations: each period needs escalations and non-escalations; give more history")


def find_quality_problem(result: TrainingResult) -> str | None:
    """Why this model must not be champion, or None: a test ROC-AUC below registry.min_test_roc_auc,
    or fewer positive test snapshots than registry.min_test_positives to trust it."""
    floor = result.params.registry
    test = result.snapshots.loc[result.snapshots[SPLIT] == "test", LABEL] if SPLIT in result.snapshots else \
        result.snapshots[LABEL]
    positives = int((test == 1).sum())
    auc = result.metrics.get("test_roc_auc", float("nan"))
    if positives < floor.min_test_positives:
        return (f"only {positives} positive test snapshots (registry.min_test_positives: {floor.min_test_positives}); "
                "its test ROC-AUC cannot be trusted")
    if not auc >= floor.min_test_roc_auc:
        return f"test ROC-AUC {auc:.4f} is below the quality floor registry.min_test_roc_auc {floor.min_test_roc_auc}"
    return None


def sample_training_rows(snapshots: pd.DataFrame, train: np.ndarray, caps: dict[str, int | None],
                         seed: int) -> dict[str, np.ndarray]:
    """Per model, the training rows to fit on: whole tickets drawn at random until its row cap.

    The draws share one random order, so a smaller cap's tickets are a subset of a larger
    one's and one feature matrix serves both models.
    """
    sizes = snapshots.loc[train, "ticket_id"].value_counts(sort=False)
    chosen = sample_training_tickets(sizes, caps, seed)
    return {name: train.copy() if tickets is None else train & snapshots["ticket_id"].isin(tickets).to_numpy()
            for name, tickets in chosen.items()}


def sample_training_tickets(sizes: pd.Series, caps: dict[str, int | None], seed: int) -> dict[str, pd.Index | None]:
    """Per model, the training tickets to fit on (None = all), from snapshots per ticket (`sizes`).

    Ticket-level, so the Dask engine draws the same tickets from a gathered count table.
    """
    order = sizes.index.to_numpy()[np.random.default_rng(seed).permutation(len(sizes))]
    cumulative = pd.Series(sizes.reindex(order).cumsum().to_numpy(), index=order)
    total = int(sizes.sum())
    return {name: None if cap is None or cap >= total else cumulative.index[cumulative.to_numpy() <= cap]
            for name, cap in caps.items()}


def train_models(events_path: Path, params: Params, rejects_path: Path | None = None,
                 step_hook: Callable[[str], AbstractContextManager] | None = None) -> TrainingResult:
    """The whole training step. `step_hook(name)` wraps each stage (the benchmark measures memory with it)."""
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        started = time.perf_counter()
        with step_hook(name) if step_hook else nullcontext():
            yield
        timings[f"{name}_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    with stage("prepare"):
        fingerprint = fingerprint_file(events_path)
        validation, snapshots, tickets = prepare_snapshots(events_path, params, rejects_path)

    parts = {p: (snapshots[SPLIT] == p).to_numpy() for p in ("train", "valid", "test")}
    caps = {"escalation": params.escalation_model.max_train_rows, "priority": params.priority_model.max_train_rows}
    fit_rows = sample_training_rows(snapshots, parts["train"], caps, params.seed)
    parts["train"] = fit_rows["escalation"] | fit_rows["priority"]
    with stage("features"):
        builder = make_feature_builder(params).fit(snapshots.loc[parts["train"]], tickets)
        # One matrix per part (not one sliced three ways) keeps a single copy in memory.
        x = {p: builder.transform(snapshots.loc[mask]) for p, mask in parts.items()}
    # Rows of the training matrix each model fits on (all of them unless a cap applies).
    use = {name: rows[parts["train"]] for name, rows in fit_rows.items()}

    trained: list[LabelResult] = []
    skipped: dict[str, str] = {}
    for label in params.list_labels():
        y = snapshots[label_column(label.name)].to_numpy()
        y_part = {p: y[mask] for p, mask in parts.items()}
        problem = None if label is params.label else find_label_problem(y_part, use["escalation"])
        same = next((done for done in trained
                     if np.array_equal(snapshots[label_column(done.name)].to_numpy(), y)), None)
        if problem is None and same is not None:
            # E.g. an export whose only escalations are of one type: its typed label is the any-rise
            # label again, which then carries the type.
            problem = f"the same values as label {same.name} on every snapshot"
            same.escalation_type = same.escalation_type or label.escalation_type
        if problem:
            log.warning("label %s not trained: %s", label.name, problem)
            skipped[label.name] = problem
            continue
        prefix = "" if label is params.label else f"label_{label.name}_"
        trained.append(fit_label(params, label, builder, snapshots, parts, x, y_part, use["escalation"],
                                 lambda name, prefix=prefix: stage(prefix + name)))
    primary = trained[0]
    primary_rows = {p: snapshots[LABEL].to_numpy()[mask] >= 0 for p, mask in parts.items()}

    with stage("priority_fit"):
        # The priority model reads the features every label shares, not the per-label outcome rates.
        priority_features = common_features(builder.feature_names_)
        target = snapshots[PRIORITY_TARGET]
        classes = choose_priority_classes(target[parts["train"]])
        priority = None
        if classes:
            y_priority = encode_priority(target, classes)
            known = y_priority >= 0
            train_priority = use["priority"] & known[parts["train"]]
            priority = fit_lightgbm(
                params.priority_model,
                x["train"].loc[train_priority, priority_features], y_priority[parts["train"]][train_priority],
                x["valid"].loc[known[parts["valid"]], priority_features], y_priority[parts["valid"] & known],
                params.seed, params.num_threads,
            )
        else:
            log.info("no priority target (the export has no priority, or one level only): "
                     "the escalation model is trained alone")

    with stage("monitoring_reference"):
        monitoring = params.monitoring
        reference = health.describe_reference(x["train"], primary.valid_probability,
                                              monitoring.psi_bins, monitoring.reference_rows, params.seed)
    case_mix = None
    if params.case_mix.enabled:
        with stage("case_mix_fit"):
            # The primary label's columns: other labels' outcome rates say nothing about its case mix.
            case_mix = fit_case_mix(params, {p: snapshots.loc[mask] for p, mask in parts.items()}, x,
                                    primary.features)

    test = snapshots.loc[parts["test"]].reset_index(drop=True)
    primary_test = test.loc[primary_rows["test"]].reset_index(drop=True)
    metrics, confusion, test_scores = evaluate_priority(
        primary.metrics, primary.test_scores, primary_test,
        priority.predict_proba(x["test"].loc[primary_rows["test"], priority_features]) if priority is not None
        else None, classes,
    )
    metrics |= describe_fit(primary.model, priority, validation)
    if case_mix is not None:
        metrics |= case_mix.metrics
    for done in trained:
        metrics |= {f"label.{done.name}.{k}": v for k, v in done.metrics.items()}
    timings["total_seconds"] = time.perf_counter() - started
    primary.test_scores = test_scores
    return TrainingResult(
        params=params,
        data_fingerprint=fingerprint,
        validation=validation,
        snapshots=snapshots,
        tickets=tickets,
        builder=builder,
        escalation_model=primary.model,
        priority_model=priority,
        priority_classes=classes,
        calibration=primary.calibration,
        thresholds=primary.thresholds,
        metrics=metrics,
        split_table=describe_split(snapshots),
        importance=primary.importance,
        confusion=confusion,
        test_scores=test_scores,
        timings=timings,
        driver_values=primary.driver_values,
        case_mix=case_mix,
        reference=reference,
        labels=trained,
        priority_features=priority_features if priority_features != builder.feature_names_ else None,
        skipped_labels=skipped,
    )


MIN_LABEL_POSITIVES = 10  # training positives a non-primary label needs to be trained at all


def find_label_problem(y_part: dict[str, np.ndarray], fit_rows: np.ndarray) -> str | None:
    """Why a (non-primary) label cannot be trained and measured here, or None."""
    positives = int((y_part["train"][fit_rows] == 1).sum())
    if positives < MIN_LABEL_POSITIVES:
        return f"{positives} positive training snapshots (fewer than {MIN_LABEL_POSITIVES})"
    for part in ("valid", "test"):
        asked = y_part[part][y_part[part] >= 0]
        if not ((asked == 1).any() and (asked == 0).any()):
            return f"the {part} period has no positive or no negative snapshot of it"
    return None


def fit_label(params: Params, label: LabelParams, builder: FeatureBuilder, snapshots: pd.DataFrame,
              parts: dict[str, np.ndarray], x: dict[str, pd.DataFrame], y_part: dict[str, np.ndarray],
              fit_rows: np.ndarray, stage: Callable[[str], AbstractContextManager] = lambda name: nullcontext()
              ) -> LabelResult:
    """One label's model on its rows and columns of the shared matrices: fitted on the training
    period, early-stopped, calibrated and banded on the validation period, measured on the test
    period beside its logistic baseline. `y_part`: the label per part (-1 = not asked there);
    `stage(name)` wraps the model fit ("escalation_fit") and the baseline's ("baseline_fit")."""
    features = select_label_features(builder.feature_names_, label.to_rule(), label.exclude)
    unknown = sorted(set(label.exclude) - {name.split("__")[0] for name in builder.feature_names_})
    if unknown:
        raise ValueError(f"label {label.name}: cannot exclude unknown feature(s): {', '.join(unknown)}")
    asked = {p: y_part[p] >= 0 for p in y_part}
    rows = fit_rows & asked["train"]
    model_params = params.label_model_params(label)
    xs = {p: x[p].loc[asked[p], features] for p in x}
    ys = {p: y_part[p][asked[p]] for p in y_part}
    with stage("escalation_fit"):
        fit = snapshots.loc[parts["train"], ["created_at", "ticket_id"]][rows]
        weights = multiply_weights(weigh_by_recency(fit["created_at"], model_params.recency_half_life_days),
                                   weigh_by_ticket(count_ticket_rows(fit["ticket_id"]), model_params.ticket_weights))
        del fit
        model = fit_lightgbm(model_params, x["train"].loc[rows, features], y_part["train"][rows],
                             xs["valid"], ys["valid"], params.seed, params.num_threads, weights)
        raw = {p: model.predict_proba(xs[p])[:, 1] for p in ("valid", "test")}
        calibration, thresholds = calibrate_and_band(raw["valid"], ys["valid"], params, model_params)
    with stage("baseline_fit"):
        categorical = [c for c in builder.categorical_features_ if c in features]
        logistic = fit_logistic_baseline(xs["train"], ys["train"], categorical, params.seed)
        logistic_prob = predict_logistic(logistic, xs["test"], categorical)
    test = snapshots.loc[parts["test"]].reset_index(drop=True).loc[asked["test"]].reset_index(drop=True)
    metrics, test_scores = evaluate_label(params, test, ys["test"], ys["valid"], raw, calibration, thresholds,
                                          logistic_prob)
    metrics["best_iteration"] = float(model.best_iteration_ or model.n_estimators)
    metrics["train_snapshots"] = float(rows.sum())
    importance = compute_importance(model, xs["test"])
    return LabelResult(label=label, model=model, features=features, calibration=calibration,
                       thresholds=thresholds, metrics=metrics, importance=importance, test_scores=test_scores,
                       driver_values=report.collect_driver_values(model, xs["test"], importance),
                       valid_probability=apply_calibration(calibration, raw["valid"]))


def make_feature_builder(params: Params) -> FeatureBuilder:
    """The unfitted feature builder the params file describes (both engines fit this one)."""
    return FeatureBuilder(
        history_windows_days=params.history.windows_days,
        history_smoothing=params.history.smoothing,
        text_enabled=params.text.enabled,
        text_params=params.text.model_dump(exclude={"enabled"}),
        max_categories=params.features.max_categories,
        min_category_count=params.features.min_category_count,
        # auto without a mapping (a canonical log): no extra columns are features
        extra_categorical=[] if params.features.extra_categorical == "auto" else params.features.extra_categorical,
        exclude_features=params.features.exclude,
        target_rate_min_levels=params.features.target_rate_min_levels,
        target_rate_smoothing=params.features.target_rate_smoothing,
        seed=params.seed,
    )


def calibrate_and_band(raw_valid: np.ndarray, y_valid: np.ndarray, params: Params,
                       model_params: ModelParams | None = None) -> tuple[dict, dict[str, float]]:
    """Calibration map and band thresholds, both read off the validation period only.

    `model_params`: the label's model settings (default: escalation_model) name the calibration."""
    calibration = fit_calibration(raw_valid, y_valid, (model_params or params.escalation_model).calibration)
    thresholds = choose_thresholds(raw_valid, y_valid, params.bands.high, params.bands.medium,
                                   params.bands.min_precision)
    thresholds |= {f"{k}_probability": float(apply_calibration(calibration, np.array([v]))[0])
                   for k, v in list(thresholds.items())}
    return calibration, thresholds


def choose_priority_classes(train_target: pd.Series) -> list[str]:
    """The priority levels seen in the training rows, in PRIORITY_ORDER; [] when fewer than two
    (an export without a priority column: there is no priority model to train)."""
    seen = set(train_target.astype("string").dropna().unique())
    classes = [c for c in PRIORITY_ORDER if c in seen]
    return classes if len(classes) >= 2 else []


def encode_priority(target: pd.Series, classes: list[str]) -> np.ndarray:
    """Class index of each final priority; -1 where it is unknown or not a training class."""
    codes = target.astype("string").map({c: i for i, c in enumerate(classes)})
    return codes.astype("float64").fillna(-1).astype(int).to_numpy()


def describe_fit(escalation: lgb.LGBMClassifier, priority: lgb.LGBMClassifier | None,
                 validation: ValidationResult) -> dict[str, float]:
    return {
        "best_iteration_escalation": float(escalation.best_iteration_ or escalation.n_estimators),
        "best_iteration_priority": (float(priority.best_iteration_ or priority.n_estimators)
                                    if priority is not None else float("nan")),
        "rows_rejected": float(validation.rejects["row"].nunique() if len(validation.rejects) else 0),
        "reject_share": float(validation.reject_share),
    }


def evaluate_test_period(params: Params, test: pd.DataFrame, y_valid: np.ndarray, raw: dict[str, np.ndarray],
                         calibration: dict, thresholds: dict[str, float], logistic_prob: np.ndarray,
                         priority_prob: np.ndarray | None, classes: list[str]
                         ) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Metrics beside baselines, the priority confusion matrix and per-row test scores.

    `test`: the test period's snapshots in the order of the predictions; `raw`: raw escalation
    scores of the valid and test periods; `priority_prob` None without a priority model (no
    priority metrics then). Small inputs only, so the Dask engine calls it too.
    """
    metrics, test_scores = evaluate_label(params, test, test[LABEL].to_numpy(), y_valid, raw, calibration,
                                          thresholds, logistic_prob)
    return evaluate_priority(metrics, test_scores, test, priority_prob, classes)


def evaluate_label(params: Params, test: pd.DataFrame, y_test: np.ndarray, y_valid: np.ndarray,
                   raw: dict[str, np.ndarray], calibration: dict, thresholds: dict[str, float],
                   logistic_prob: np.ndarray) -> tuple[dict[str, float], pd.DataFrame]:
    """One label's test metrics beside its baselines (logistic regression, the typed-priority rule),
    its bands' shares and rates, and its per-row test scores.

    `test`: the test snapshots the label asks about, in prediction order; `y_test`, `y_valid`: its
    values there (0/1); `raw`: its model's raw scores of the valid and test periods."""
    prob = {p: apply_calibration(calibration, raw[p]) for p in ("valid", "test")}
    ev = params.evaluation
    metrics = evaluate.score_binary(y_test, prob["test"], ev.top_shares, ev.ece_bins, prefix="test_")
    metrics |= evaluate.score_by_position(y_test, prob["test"], test[POSITION].to_numpy(), ev.max_position,
                                          prefix="test_")
    metrics["test_ece_uncalibrated"] = evaluate.expected_calibration_error(y_test, raw["test"], ev.ece_bins)
    metrics |= evaluate.score_binary(y_valid, prob["valid"], ev.top_shares, ev.ece_bins, prefix="valid_")
    typed_rank = test["priority"].map({c: i for i, c in enumerate(PRIORITY_ORDER)}).fillna(1).to_numpy()
    rule_score = typed_rank + 1e-3 * test["created_at"].rank(pct=True).to_numpy()
    metrics |= evaluate.score_ranking(y_test, rule_score, ev.top_shares, prefix="baseline_priority_rule_")
    metrics |= evaluate.score_binary(y_test, logistic_prob, ev.top_shares, ev.ece_bins, prefix="baseline_logistic_")
    metrics |= evaluate.score_by_position(y_test, logistic_prob, test[POSITION].to_numpy(), 0,
                                          prefix="baseline_logistic_")

    band = assign_bands(raw["test"], thresholds)
    for name in ("high", "medium", "low"):
        in_band = band == name
        metrics[f"test_band_{name}_share"] = float(in_band.mean())
        metrics[f"test_band_{name}_escalation_rate"] = float(y_test[in_band].mean()) if in_band.any() else float("nan")
    escalate_now = raw["test"] >= thresholds["escalate_now"]
    metrics["test_escalate_now_precision"] = float(y_test[escalate_now].mean()) if escalate_now.any() else float("nan")
    metrics["test_escalate_now_recall"] = float(y_test[escalate_now].sum() / max(y_test.sum(), 1))
    test_scores = pd.DataFrame(
        {
            "ticket_id": test["ticket_id"].astype(str),
            "position": test[POSITION],
            "snapshot_time": test["snapshot_time"],
            "escalates": y_test,
            "probability": prob["test"],
            "raw_probability": raw["test"],
            "band": band,
            "logistic_probability": logistic_prob,
            **{c: test[c].astype("string").to_numpy() for c in report.SEGMENTS if c in test},
        }
    )
    return metrics, test_scores


def evaluate_priority(metrics: dict[str, float], test_scores: pd.DataFrame, test: pd.DataFrame,
                      priority_prob: np.ndarray | None, classes: list[str]
                      ) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """The primary label's metrics and test scores with the priority model's beside them, and its
    confusion matrix. `test`: the rows of `test_scores`; `priority_prob`: the model's class
    probabilities there (None without a priority model: no priority metrics, an empty matrix)."""
    metrics = dict(metrics)
    final = test[PRIORITY_TARGET].astype("string").to_numpy()
    typed = test["priority"].astype("string").fillna("normal").to_numpy()
    if priority_prob is not None and classes:
        test_known = encode_priority(test[PRIORITY_TARGET], classes) >= 0
        predicted_priority = np.asarray(classes, dtype=object)[np.argmax(priority_prob, axis=1)]
        metrics |= evaluate.score_priority(final[test_known], predicted_priority[test_known], classes,
                                           prefix="test_priority_")
        metrics |= evaluate.score_priority(final[test_known], typed[test_known], classes,
                                           prefix="baseline_typed_priority_")
        confusion = evaluate.tabulate_confusion(final[test_known], predicted_priority[test_known], classes)
    else:
        predicted_priority = np.full(len(test), None, dtype=object)
        confusion = pd.DataFrame(index=pd.Index([], name="final"), columns=pd.Index([], name="predicted"))
    position = list(test_scores.columns).index("logistic_probability") + 1
    test_scores = test_scores.copy()
    for offset, (name, values) in enumerate((("priority_final", final), ("priority_typed", typed),
                                             ("priority_predicted", predicted_priority))):
        test_scores.insert(position + offset, name, values)
    return metrics, confusion, test_scores


def format_metrics_table(metrics: dict[str, float]) -> str:
    """The headline table `make train` prints: model beside baselines on the test period."""
    rows = [
        ("ROC-AUC", "test_roc_auc", "baseline_logistic_roc_auc", "baseline_priority_rule_roc_auc"),
        ("ROC-AUC at creation", "test_roc_auc_position_0", "baseline_logistic_roc_auc_position_0", None),
        ("PR-AUC", "test_pr_auc", "baseline_logistic_pr_auc", "baseline_priority_rule_pr_auc"),
        ("Brier", "test_brier", "baseline_logistic_brier", None),
        ("ECE", "test_ece", "baseline_logistic_ece", None),
        ("precision @ top 5%", "test_precision_at_5pct", "baseline_logistic_precision_at_5pct",
         "baseline_priority_rule_precision_at_5pct"),
        ("recall @ top 10%", "test_recall_at_10pct", "baseline_logistic_recall_at_10pct",
         "baseline_priority_rule_recall_at_10pct"),
        ("recall @ top 20%", "test_recall_at_20pct", "baseline_logistic_recall_at_20pct",
         "baseline_priority_rule_recall_at_20pct"),
        ("priority macro-F1", "test_priority_macro_f1", None, "baseline_typed_priority_macro_f1"),
        ("priority accuracy", "test_priority_accuracy", None, "baseline_typed_priority_accuracy"),
    ]

    def cell(key: str | None) -> str:
        return f"{metrics[key]:.4f}" if key and key in metrics and not np.isnan(metrics[key]) else "-"

    lines = [f"{'metric (test period)':<24}{'LightGBM':>10}{'logistic':>10}{'rule':>10}"]
    for label, ours, logistic, rule in rows:
        lines.append(f"{label:<24}{cell(ours):>10}{cell(logistic):>10}{cell(rule):>10}")
    lines.append(f"{'base rate':<24}{cell('test_base_rate'):>10}")
    by_position = "  ".join(
        f"{p}:{metrics[f'test_roc_auc_position_{p}']:.3f}"
        for p in range(9)
        if f"test_roc_auc_position_{p}" in metrics and not np.isnan(metrics[f"test_roc_auc_position_{p}"])
    )
    lines.append(f"ROC-AUC by update position  {by_position}")
    lines.append("(rule = rank by the priority people typed; for priority, rule = the typed priority)")
    return "\n".join(lines)


def format_label_table(result: TrainingResult) -> str:
    """Per label (the primary first): its test ROC-AUC beside its logistic baseline, and more.

    Empty for a single label (format_metrics_table says it all)."""
    if len(result.labels) < 2 and not result.skipped_labels:
        return ""
    columns = (("ROC-AUC", "test_roc_auc"), ("logistic", "baseline_logistic_roc_auc"),
               ("at creation", "test_roc_auc_position_0"), ("PR-AUC", "test_pr_auc"),
               ("recall@10%", "test_recall_at_10pct"), ("ECE", "test_ece"), ("base rate", "test_base_rate"))
    lines = [f"{'label (test period)':<22}{'type':<20}" + "".join(f"{name:>12}" for name, _ in columns)]
    for label in result.labels:
        cells = "".join(f"{label.metrics.get(key, float('nan')):>12.4f}" for _, key in columns)
        lines.append(f"{label.name:<22}{label.escalation_type or 'any':<20}{cells}")
    lines += [f"{name:<22}not trained: {why}" for name, why in result.skipped_labels.items()]
    return "\n".join(lines)
