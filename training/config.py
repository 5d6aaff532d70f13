"""The params file: modelling choices, validated so a typo fails fast with the field's name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bundle.health import DEFAULTS as HEALTH
from features.labels import LabelRule
from features.schema import normalize_category
from features.yaml_files import load_yaml_model


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Section):
    max_reject_share: float = Field(0.05, ge=0, le=1)
    # Too little to learn from: training stops with the counts rather than fit a model on noise.
    min_tickets: int = Field(200, ge=1)
    min_positive_tickets: int = Field(20, ge=1)   # tickets with at least one positive snapshot


EscalationType = Literal["hierarchical", "functional", "time_based", "priority", "customer_initiated"]


class LabelParams(_Section):
    """One label (features.labels): level_rise: escalation_level rises after the snapshot (with
    `rise_type`: and that first rise is of this type); counter_rise: `counter` rises at least
    `min_rise` more times after it (e.g. reassignments: a functional escalation); sla_missed:
    the SLA due time passes while the ticket is open."""

    # Names the label in the response (escalation.types), metrics (label.<name>.*) and files.
    name: str = Field("escalation", pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$", max_length=40)
    rule: Literal["level_rise", "counter_rise", "sla_missed"] = "level_rise"
    horizon_hours: float | None = Field(336, gt=0)
    counter: str = "reassignment_count"
    min_rise: int = Field(2, ge=1)
    rise_type: EscalationType | None = None
    # The kind of escalation the label stands for (the escalation matrix matches on it);
    # default: rise_type, time_based for sla_missed, else none (any kind).
    escalation_type: EscalationType | None = None
    # This label's model: changes to `escalation_model` (e.g. its own recency half-life) and
    # built-in features it leaves out besides features.exclude.
    escalation_model: dict = {}
    exclude: list[str] = []

    @model_validator(mode="after")
    def _consistent(self) -> LabelParams:
        if self.rise_type is not None and self.rule != "level_rise":
            raise ValueError("rise_type applies to the level_rise rule only")
        if self.escalation_type is None:
            self.escalation_type = self.rise_type or ("time_based" if self.rule == "sla_missed" else None)
        return self

    def to_rule(self) -> LabelRule:
        return LabelRule(name=self.name, rule=self.rule, horizon_hours=self.horizon_hours, counter=self.counter,
                         min_rise=self.min_rise, rise_type=self.rise_type, escalation_type=self.escalation_type)

    def describe_target(self) -> dict:
        """What the label predicts, for comparing models (the registry's champion gate): its
        definition, never its name or modelling choices."""
        target = {"rule": self.rule, "horizon_hours": self.horizon_hours, "counter": self.counter,
                  "min_rise": self.min_rise}
        return target | ({"rise_type": self.rise_type} if self.rise_type else {})


class SnapshotParams(_Section):
    max_per_ticket: int = Field(12, ge=1)
    # The statuses that end a ticket. An imported export takes them from its mapping's
    # closing_statuses (the one definition for the audit and the snapshots); a canonical log
    # defaults to [closed]. Set here only for a canonical log, or to repeat the mapping's.
    closed_statuses: list[str] | None = None

    @property
    def closing(self) -> list[str]:
        """The closing statuses in force ([closed] when neither a mapping nor the params set them)."""
        return list(self.closed_statuses) if self.closed_statuses is not None else ["closed"]

    @field_validator("closed_statuses")
    @classmethod
    def _normal_form(cls, values: list[str] | None) -> list[str] | None:
        """Statuses are compared with the validated log's, which are in normal form ("Closed" = "closed")."""
        if values is None:  # as a dumped Params gives it back (Params.select_label)
            return None
        return [normal for value in values if (normal := normalize_category(value)) is not None]


class SplitParams(_Section):
    train: float = Field(0.70, gt=0, lt=1)
    valid: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitParams:
        if abs(self.train + self.valid + self.test - 1) > 1e-6:
            raise ValueError("split.train + split.valid + split.test must be 1")
        return self


class HistoryParams(_Section):
    windows_days: list[int] = [7, 30, 90]
    smoothing: float = Field(20, ge=0)


class TextParams(_Section):
    enabled: bool = True
    max_features: int = Field(20000, ge=10)
    ngram_max: int = Field(2, ge=1, le=3)
    min_df: int = Field(3, ge=1)
    svd_components: int = Field(24, ge=0)
    # Characters read per text field (subject, description, latest message); the rest is ignored,
    # in training and serving alike, so a huge text costs bounded time (features.text).
    max_field_chars: int = Field(10_000, ge=100, le=1_000_000)


class FeatureParams(_Section):
    """Columns beyond the built-in feature set, and built-in features to leave out (per source)."""

    # Canonical-log columns an importer adds (mapping `extra:`) used as categorical features.
    # auto = every extra of the mapping that survived the leakage audit, minus its not_features
    # (none for a canonical log); or an explicit list.
    extra_categorical: list[str] | Literal["auto"] = "auto"
    max_categories: int = Field(60, ge=1)    # levels kept per categorical, most frequent first
    min_category_count: int = Field(1, ge=1)  # rarer levels in the training period count as missing
    exclude: list[str] = []                  # built-in features not to use (e.g. drifting as-of rates)
    # High-cardinality categoricals (at least this many training levels; null = none) also get
    # `<column>_rate`: the level's escalation rate, out of fold (5 folds by ticket) on the training period.
    target_rate_min_levels: int | None = Field(None, ge=2)
    target_rate_smoothing: float = Field(20, ge=0)


class ModelParams(_Section):
    model_config = ConfigDict(extra="allow")
    objective: str
    learning_rate: float = Field(0.05, gt=0)
    n_estimators: int = Field(1000, ge=1)
    # null = fit all n_estimators: on a drifting log the validation period's loss stops too early.
    early_stopping_rounds: int | None = Field(100, ge=1)
    calibration: Literal["isotonic", "sigmoid"] | None = None
    max_train_rows: int | None = Field(None, ge=1000)
    # Weight a training ticket by 0.5 ** (days it opened before the newest one / half-life): drifting logs.
    recency_half_life_days: float | None = Field(None, gt=0)
    # "equal": each ticket's snapshots together weigh as much as one snapshot (times its recency
    # weight), so a ticket logged 12 times does not count 12 times as much as one logged once.
    ticket_weights: Literal["equal"] | None = None
    monotone_increasing: list[str] = []
    monotone_decreasing: list[str] = []

    def lightgbm_params(self, seed: int, num_threads: int) -> dict:
        """Keyword arguments for LGBMClassifier: deterministic, so a rerun gives the same metrics."""
        own = {"early_stopping_rounds", "calibration", "monotone_increasing", "monotone_decreasing",
               "max_train_rows", "recency_half_life_days", "ticket_weights"}
        extra = {k: v for k, v in self.model_dump().items() if k not in own}
        return extra | {
            "random_state": seed,
            "n_jobs": num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def monotone_constraints(self, feature_names: list[str]) -> list[int] | None:
        """LightGBM's per-feature constraint list; unknown names are an error, not a silent no-op."""
        unknown = sorted(set(self.monotone_increasing + self.monotone_decreasing) - set(feature_names))
        if unknown:
            raise ValueError(f"monotone constraint on unknown feature(s): {', '.join(unknown)}")
        if not (self.monotone_increasing or self.monotone_decreasing):
            return None
        up, down = set(self.monotone_increasing), set(self.monotone_decreasing)
        return [1 if f in up else -1 if f in down else 0 for f in feature_names]


class BandParams(_Section):
    high: float = Field(0.05, gt=0, lt=1)
    medium: float = Field(0.20, gt=0, lt=1)
    min_precision: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> BandParams:
        if self.medium < self.high:
            raise ValueError("bands.medium must be a larger share than bands.high")
        return self


class EvaluationParams(_Section):
    top_shares: list[float] = [0.05, 0.10, 0.20]
    max_position: int = 8
    ece_bins: int = 15


class RegistryParams(_Section):
    min_auc_gain: float = 0.0
    # The quality floor: a model below it is never champion (nor models/current), even the first one.
    min_test_roc_auc: float = Field(0.60, ge=0, le=1)
    min_test_positives: int = Field(30, ge=0)     # positive test snapshots needed to trust its ROC-AUC


class DaskParams(_Section):
    """The Dask engine only (`train --engine dask`)."""

    # Validation rows (whole tickets, sampled) that EVERY worker scores for early stopping.
    early_stopping_rows: int = Field(200_000, ge=1000)


class CaseMixParams(_Section):
    """The case-mix model behind "against case mix" (indirect standardisation, bundle/case_mix.py):
    it sees each ticket as it arrived (its creation snapshot) and the customer, never who handled it."""

    enabled: bool = True
    # Features the case-mix model must not see: the agent's and team's own (and the agent's work
    # on the ticket). Prefixes match the as-of history names (agent_*, group_*).
    exclude_prefixes: list[str] = ["agent_", "group_"]
    exclude: list[str] = ["group", "agent_messages"]
    model: ModelParams = ModelParams(objective="binary", learning_rate=0.05, num_leaves=15, min_child_samples=50,
                                     feature_fraction=0.8, n_estimators=500, early_stopping_rounds=50)
    # Sigmoid, not isotonic: isotonic steps put some tickets' expected risk at 0, and one escalation
    # against an expected ~0 would flag a one-ticket customer.
    calibration: Literal["isotonic", "sigmoid"] | None = "sigmoid"
    confidence: float = Field(0.95, gt=0.5, lt=1)   # two-sided interval of observed / expected
    min_tickets: int = Field(20, ge=1)             # rows with fewer tickets are shown, never flagged
    # "window": expected is shifted (one logit offset) so a window's total expected equals its total
    # observed: each row is compared with the window's own average given its case mix. "model": as fitted.
    reference: Literal["window", "model"] = "window"
    repeat_within_days: float = Field(7, gt=0)     # a contact within this many days of the previous one repeats
    max_rows: int = Field(15, ge=1)                # rows per table in the report (flagged rows always shown)


class MonitoringParams(_Section):
    """Live model health (bundle/health.py, whose DEFAULTS these are): windows, drift bins, and when
    to recommend retraining."""

    window_days: float = Field(HEALTH["window_days"], gt=0)           # one rolling window of outcomes
    windows: int = Field(HEALTH["windows"], ge=1)                     # how many windows back health goes
    psi_bins: int = Field(HEALTH["psi_bins"], ge=2, le=50)            # quantile bins of the training distribution
    psi_watch: float = Field(HEALTH["psi_watch"], gt=0)               # PSI above this: "watch"
    psi_retrain: float = Field(HEALTH["psi_retrain"], gt=0)           # PSI above this: "drifted"
    drifting_features_for_retrain: int = Field(HEALTH["drifting_features_for_retrain"], ge=1)  # this many drifted features
    ece_retrain: float = Field(HEALTH["ece_retrain"], gt=0, lt=1)     # live ECE above this recommends retraining
    auc_drop_retrain: float = Field(HEALTH["auc_drop_retrain"], gt=0, lt=1)  # live ROC-AUC this far below the test's
    min_outcomes: int = Field(HEALTH["min_outcomes"], ge=10)          # fewer outcomes in a window: not judged
    min_drift_rows: int = Field(HEALTH["min_drift_rows"], ge=10)      # fewer live rows: drift not judged
    reference_rows: int = Field(HEALTH["reference_rows"], ge=1000)    # training rows sampled for the reference


class Params(_Section):
    seed: int = 42
    num_threads: int = Field(2, ge=1)
    data: DataParams = DataParams()
    label: LabelParams = LabelParams()
    # Several labels, a model each on one shared feature matrix (features.labels); `label` is
    # then the primary one (primary_label, default the first): the champion gate and the
    # response's escalation.probability use it.
    labels: list[LabelParams] = []
    primary_label: str | None = None
    snapshots: SnapshotParams = SnapshotParams()
    split: SplitParams = SplitParams()
    history: HistoryParams = HistoryParams()
    text: TextParams = TextParams()
    features: FeatureParams = FeatureParams()
    escalation_model: ModelParams
    priority_model: ModelParams
    bands: BandParams = BandParams()
    evaluation: EvaluationParams = EvaluationParams()
    registry: RegistryParams = RegistryParams()
    dask: DaskParams = DaskParams()
    case_mix: CaseMixParams = CaseMixParams()
    monitoring: MonitoringParams = MonitoringParams()

    @model_validator(mode="after")
    def _labels(self) -> Params:
        if not self.labels:
            if self.primary_label is not None and self.primary_label != self.label.name:
                raise ValueError(f"primary_label {self.primary_label!r} is not a label's name")
            return self
        if "label" in self.model_fields_set:
            raise ValueError("give either `label` (one label) or `labels` (several), not both")
        names = [label.name for label in self.labels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate label name(s): {', '.join(duplicates)}")
        primary = self.primary_label or names[0]
        if primary not in names:
            raise ValueError(f"primary_label {primary!r} is not one of the labels ({', '.join(names)})")
        self.primary_label = primary
        # The primary first: everything that reads one label reads labels[0] (= `label`).
        self.labels = sorted(self.labels, key=lambda label: label.name != primary)
        self.label = self.labels[0]
        for label in self.labels:
            ModelParams.model_validate(self.escalation_model.model_dump() | label.escalation_model)
        return self

    def list_labels(self) -> list[LabelParams]:
        """Every label, the primary first."""
        return list(self.labels) or [self.label]

    def label_model_params(self, label: LabelParams) -> ModelParams:
        """`escalation_model` with the label's own changes."""
        if not label.escalation_model:
            return self.escalation_model
        return ModelParams.model_validate(self.escalation_model.model_dump() | label.escalation_model)

    def select_label(self, name: str) -> Params:
        """These params with only label `name` (its model changes applied): that label trained alone."""
        chosen = next((label for label in self.list_labels() if label.name == name), None)
        if chosen is None:
            raise ValueError(f"no label {name!r}; labels: {', '.join(lb.name for lb in self.list_labels())}")
        data = self.model_dump(exclude={"labels", "primary_label", "label"})
        data["escalation_model"] = self.label_model_params(chosen).model_dump()
        data["features"]["exclude"] = [*self.features.exclude, *chosen.exclude]
        data["label"] = chosen.model_dump(exclude={"escalation_model", "exclude"})
        return Params.model_validate(data)


class ParamsError(ValueError):
    """The params file is missing or invalid; the message names the bad fields."""


def load_params(params_path: Path) -> Params:
    return load_yaml_model(params_path, Params, "params file", ParamsError)


def adopt_mapping(params: Params, closing_statuses: list[str], feature_extras: list[str]) -> Params:
    """Params for an imported export: the mapping's closing statuses, and its extras as features
    when `features.extra_categorical` is auto. Raises ParamsError when the params file defines
    other closing statuses than the mapping (two definitions of "closed" cannot both hold)."""
    given = params.snapshots.closed_statuses
    # In normal form, as the validated log's statuses and the params file's (SnapshotParams).
    mine = [normal for s in closing_statuses if (normal := normalize_category(s)) is not None]
    if given is not None and set(given) != set(mine):
        raise ParamsError(f"the params file's snapshots.closed_statuses {given} differ from the mapping's "
                          f"closing_statuses {list(closing_statuses)}; define the closing statuses once, "
                          "in the mapping")
    out = params.model_copy(deep=True)
    out.snapshots.closed_statuses = mine
    if out.features.extra_categorical == "auto":
        out.features.extra_categorical = list(feature_extras)
    return out


def flatten_params(params: Params) -> dict[str, object]:
    """Dotted keys for MLflow's flat parameter table."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", params.model_dump())
    return flat
