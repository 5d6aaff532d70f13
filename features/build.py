"""The feature builder: one fit/transform object used by training and by serving a live ticket.

Input rows are canonical tickets (event-log rows) with a `snapshot_time`; a live ticket
is scored as its latest row, at its event_time. Identity columns (ticket, customer and
agent ids, names) are never features themselves: only what history says about them is.

The learned state is data: `FeatureBuilder.state()` gives JSON-ready values and float64
arrays, `FeatureBuilder.from_state` validates them and rebuilds the builder (the model bundle
stores them as feature_builder.json and feature_builder.npz; nothing is ever unpickled). The
as-of history index is rebuilt from the bundle's history table (`fit_history`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.history import HistoryFeatures
from features.labels import RATE_FEATURES, expand_exclusions, list_outcome_labels, outcome_table, rate_feature
from features.schema import NORMALIZATION_VERSION, PRIORITY_ORDER, normalize_categories
from features.snapshots import LABEL, SNAPSHOT_TIME
from features.text import TextFeatures

CATEGORICAL_FEATURES = ("channel", "category", "subcategory", "priority", "customer_tier", "group", "status",
                        "event_type")
COUNTER_FEATURES = ("reassignment_count", "reopen_count", "customer_messages", "agent_messages",
                    "escalation_level")
TICKET_FEATURES = ("age_hours", "created_hour", "created_weekday", "snapshot_hour", "snapshot_weekday",
                   "business_hours", "hours_to_sla", "sla_breached", *COUNTER_FEATURES, "messages_total",
                   "customer_to_agent_messages", "customer_messages_per_day", "priority_rank")
BUILDER_STATE_FORMAT = "escalation-risk feature builder"
BUILDER_STATE_VERSION = 1
# How a reason shows a feature the ticket does not have, or a category not seen in training.
MISSING = "not set"
UNSEEN = "other"
_HOUR = pd.Timedelta(hours=1)


def _hours_between(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    return ((later - earlier) / _HOUR).to_numpy(dtype="float64", na_value=np.nan)


def compute_ticket_features(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Features read off the ticket's own row: age, timing, SLA position and counters."""
    t = snapshots[SNAPSHOT_TIME]
    created = snapshots["created_at"]
    out = pd.DataFrame(index=snapshots.index)
    out["age_hours"] = _hours_between(t, created)
    out["created_hour"] = created.dt.hour.astype("float64")
    out["created_weekday"] = created.dt.day_of_week.astype("float64")
    out["snapshot_hour"] = t.dt.hour.astype("float64")
    out["snapshot_weekday"] = t.dt.day_of_week.astype("float64")
    out["business_hours"] = ((t.dt.day_of_week < 5) & t.dt.hour.between(8, 17)).astype("float64")
    if "sla_due_at" in snapshots:
        due = snapshots["sla_due_at"]
        out["hours_to_sla"] = _hours_between(due, t)
        out["sla_breached"] = np.where(due.isna(), np.nan, (due < t).astype("float64"))
    else:
        out["hours_to_sla"] = np.nan
        out["sla_breached"] = np.nan
    for column in COUNTER_FEATURES:
        out[column] = (
            pd.to_numeric(snapshots[column], errors="coerce").astype("float64") if column in snapshots else np.nan
        )
    out["messages_total"] = out["customer_messages"] + out["agent_messages"]
    out["customer_to_agent_messages"] = out["customer_messages"] / (out["agent_messages"] + 1)
    out["customer_messages_per_day"] = out["customer_messages"] / (out["age_hours"] / 24 + 1)
    lookup = {name: float(i) for i, name in enumerate(PRIORITY_ORDER)}
    out["priority_rank"] = snapshots["priority"].map(lookup).astype("float64") if "priority" in snapshots else np.nan
    return out[list(TICKET_FEATURES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextState(_Strict):
    max_features: int
    ngram_max: int = Field(ge=1, le=3)
    min_df: int
    svd_components: int
    seed: int
    max_fit_texts: int
    max_field_chars: int = Field(ge=1)
    terms: list[str] | None
    feature_names: list[str]


class BuilderParams(_Strict):
    history_windows_days: list[int]
    history_smoothing: float
    text_enabled: bool
    text_params: dict[str, int]
    max_categories: int
    seed: int
    min_category_count: int
    extra_categorical: list[str]
    exclude_features: list[str]
    target_rate_min_levels: int | None = None
    target_rate_smoothing: float = 20.0


class RateTable(_Strict):
    """Out-of-fold escalation rates of one categorical's levels (FeatureBuilder.transform_rates)."""

    all: dict[str, float]
    prior: float
    folds: list[dict[str, float]]
    fold_priors: list[float]


class BuilderState(_Strict):
    """The JSON half of a fitted FeatureBuilder (the arrays travel beside it)."""

    format: str
    format_version: int
    params: BuilderParams
    categories: dict[str, list[str]]
    feature_names: list[str]
    text: TextState | None
    # features.schema.NORMALIZATION_VERSION the categories were fitted with; 0 (states written
    # before normalisation existed): values are read as sent, as they were trained.
    category_normalization: int = 0
    # The end of the fitting period (ISO time): the history's prior is read there (None: bundles
    # written before it existed read it over their whole history table).
    history_as_of: str | None = None
    rates: dict[str, RateTable] = {}

RATE_FOLDS = 5


def find_rate_folds(ticket_ids) -> np.ndarray:
    """Each ticket's fold (0..RATE_FOLDS-1) for out-of-fold rates: CRC-32 of its id, the same everywhere."""
    return np.fromiter((zlib.crc32(str(t).encode("utf-8")) % RATE_FOLDS for t in ticket_ids), dtype=np.int64,
                       count=len(ticket_ids))


def fit_rates(values: pd.Series, y: np.ndarray, folds: np.ndarray, smoothing: float) -> dict:
    """Smoothed escalation rate per level, (n_escalated + smoothing * prior) / (n + smoothing), on all the
    training rows and, per fold, on the other folds' rows only (out-of-fold target statistics)."""
    def rates(mask: np.ndarray) -> tuple[dict[str, float], float]:
        prior = float(y[mask].mean()) if mask.any() else 0.0
        stats = pd.DataFrame({"v": values[mask].to_numpy(), "y": y[mask]}).dropna().groupby("v")["y"].agg(
            ["sum", "count"])
        table = (stats["sum"] + smoothing * prior) / (stats["count"] + smoothing)
        return {str(k): float(v) for k, v in table.items()}, prior

    everything, prior = rates(np.ones(len(y), dtype=bool))
    per_fold = [rates(folds != k) for k in range(RATE_FOLDS)]
    return {"all": everything, "prior": prior, "folds": [t for t, _ in per_fold], "fold_priors": [p for _, p in per_fold]}


class FeatureBuilder:
    """Learns category vocabularies, the text embedding, the as-of history table and, for
    high-cardinality categoricals, out-of-fold escalation rates per level."""

    def __init__(self, history_windows_days=(7, 30, 90), history_smoothing: float = 20.0, text_enabled: bool = True,
                 text_params: dict | None = None, max_categories: int = 60, seed: int = 42,
                 min_category_count: int = 1, extra_categorical: list[str] | tuple[str, ...] = (),
                 exclude_features: list[str] | tuple[str, ...] = (), target_rate_min_levels: int | None = None,
                 target_rate_smoothing: float = 20.0):
        self.history_windows_days = list(history_windows_days)
        self.history_smoothing = history_smoothing
        self.text_enabled = text_enabled
        self.text_params = dict(text_params or {})
        self.max_categories = max_categories
        self.seed = seed
        # Rare levels would let trees memorise single callers or openers of the training period.
        self.min_category_count = min_category_count
        self.extra_categorical = list(extra_categorical)
        self.exclude_features = list(exclude_features)
        # A categorical with at least this many training levels also gets `<column>_rate`: its level's
        # escalation rate, out of fold on the training period's tickets (None = never).
        self.target_rate_min_levels = target_rate_min_levels
        self.target_rate_smoothing = float(target_rate_smoothing)

    def fit(self, snapshots: pd.DataFrame, tickets: pd.DataFrame) -> FeatureBuilder:
        """`snapshots`: the training period's rows; `tickets`: features.history.summarize_tickets of the log
        (with features.labels.add_label_outcomes' columns, each such label gets its own rate features).

        The history's prior is read as of the newest ticket opened in the training period
        (`history_as_of_`), so no outcome from the validation or test periods reaches it.
        """
        self.categories_: dict[str, list[str]] = {}
        self.category_normalization_ = NORMALIZATION_VERSION
        for column in (*CATEGORICAL_FEATURES, *self.extra_categorical):
            if column in snapshots and column not in self.exclude_features:
                counts = self._category_values(snapshots, column).value_counts()
                counts = counts[counts >= self.min_category_count]
                self.categories_[column] = sorted(counts.index[: self.max_categories].tolist())
        self.history_as_of_ = pd.Timestamp(snapshots["created_at"].max()) if len(snapshots) else None
        self.fit_history(tickets)
        self.rates_: dict[str, dict] = {}
        if self.target_rate_min_levels is not None and LABEL in snapshots:
            # The primary label's rates, on the rows it asks about (with several labels, -1 elsewhere).
            asked = snapshots[LABEL].to_numpy() >= 0
            folds = find_rate_folds(snapshots["ticket_id"].to_numpy()[asked])
            y = snapshots[LABEL].to_numpy(dtype="float64")[asked]
            for column in self.categories_:
                values = self._category_values(snapshots, column)[asked]
                if values.nunique() >= self.target_rate_min_levels:
                    self.rates_[column] = fit_rates(values, y, folds, self.target_rate_smoothing)
        self.text_ = TextFeatures(seed=self.seed, **self.text_params).fit(snapshots) if self.text_enabled else None
        every = set(self._transform_all(snapshots.head(1)).columns) | set(CATEGORICAL_FEATURES)
        unknown = sorted(set(self.exclude_features) - every)
        if unknown:
            raise ValueError(f"cannot exclude unknown feature(s): {', '.join(unknown)}")
        self.feature_names_ = list(self.transform(snapshots.head(1)).columns)
        return self

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-ready state, float64 arrays by name) of the fitted builder, without the history index."""
        params = {name: getattr(self, name) for name in BuilderParams.model_fields}
        text_values, text_arrays = self.text_.state() if self.text_ is not None else (None, {})
        values = {"format": BUILDER_STATE_FORMAT, "format_version": BUILDER_STATE_VERSION, "params": params,
                  "categories": self.categories_, "feature_names": list(self.feature_names_), "text": text_values,
                  "category_normalization": getattr(self, "category_normalization_", 0),
                  "history_as_of": (None if getattr(self, "history_as_of_", None) is None
                                    else self.history_as_of_.isoformat()),
                  "rates": getattr(self, "rates_", {})}
        return BuilderState.model_validate(values).model_dump(mode="json"), {
            f"text_{name}": array for name, array in text_arrays.items()}

    @classmethod
    def from_state(cls, values: object, arrays: dict[str, np.ndarray]) -> FeatureBuilder:
        """The builder `state()` described, without its history index (see `fit_history`).

        Raises ValueError naming what is wrong when the state is not a builder's of this format.
        """
        state = BuilderState.model_validate(values)  # pydantic's ValidationError is a ValueError
        if state.format != BUILDER_STATE_FORMAT or state.format_version != BUILDER_STATE_VERSION:
            raise ValueError(f"not a feature builder state of version {BUILDER_STATE_VERSION} "
                             f"(format {state.format!r}, version {state.format_version})")
        builder = cls(**state.params.model_dump())
        builder.categories_ = {column: list(levels) for column, levels in state.categories.items()}
        builder.category_normalization_ = state.category_normalization
        builder.history_as_of_ = None if state.history_as_of is None else pd.Timestamp(state.history_as_of)
        builder.rates_ = {column: table.model_dump() for column, table in state.rates.items()}
        builder.text_ = None
        if state.text is not None:
            text_arrays = {k.removeprefix("text_"): v for k, v in arrays.items() if k.startswith("text_")}
            builder.text_ = TextFeatures.from_state(state.text.model_dump(), text_arrays)
        if state.text is None and builder.text_enabled:
            raise ValueError("text features are enabled but the state has no text part")
        builder.feature_names_ = list(state.feature_names)
        builder.history_ = None
        return builder

    def fit_history(self, tickets: pd.DataFrame) -> FeatureBuilder:
        """Rebuild the as-of history index from the ticket summaries the builder was fitted with,
        the prior read as at fit time (`history_as_of_`): the any-rise one (`history_`) and, for each
        label with its own outcome in the table (features.labels.add_label_outcomes' columns), one
        counting that outcome (`label_history_`). Bundles store the table, not these (bundle.model)."""
        self.history_ = self._fit_one_history(tickets)
        self.label_history_ = {label: self._fit_one_history(outcome_table(tickets, label))
                               for label in list_outcome_labels(tickets)}
        return self

    def _fit_one_history(self, tickets: pd.DataFrame) -> HistoryFeatures:
        return HistoryFeatures(self.history_windows_days, self.history_smoothing).fit(
            tickets, as_of=getattr(self, "history_as_of_", None))

    def transform(self, snapshots: pd.DataFrame, chunk_rows: int = 250_000) -> pd.DataFrame:
        """Features for each row, in input order; large inputs go in chunks to bound memory."""
        if len(snapshots) > chunk_rows:
            chunks = [self.transform(snapshots.iloc[i : i + chunk_rows], chunk_rows)
                      for i in range(0, len(snapshots), chunk_rows)]
            return pd.concat(chunks, ignore_index=True)
        frame = self._transform_all(snapshots)
        excluded = expand_exclusions(self.exclude_features, list(self.label_histories))
        return frame.drop(columns=excluded, errors="ignore") if excluded else frame

    def transform_rates(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        """`<column>_rate` per high-cardinality categorical: tickets opened in the training period
        (created_at up to `history_as_of_`) get their fold's out-of-fold rate, later ones the rate
        over all training rows; a level not seen in training gets the prior."""
        rates = getattr(self, "rates_", {})
        out = pd.DataFrame(index=snapshots.index)
        if not rates:
            return out
        created = pd.to_datetime(snapshots["created_at"], utc=True)
        inside = (created <= self.history_as_of_).fillna(False).to_numpy(dtype=bool)
        folds = find_rate_folds(snapshots["ticket_id"].to_numpy()) if inside.any() else None
        for column, table in rates.items():
            values = (self._category_values(snapshots, column) if column in snapshots
                      else pd.Series(pd.NA, index=snapshots.index, dtype="string"))
            result = values.map(table["all"]).astype("float64").fillna(table["prior"]).to_numpy(copy=True)
            for k in range(RATE_FOLDS) if folds is not None else ():
                chosen = inside & (folds == k)
                if chosen.any():
                    result[chosen] = (values[chosen].map(table["folds"][k]).astype("float64")
                                      .fillna(table["fold_priors"][k]).to_numpy())
            out[f"{column}_rate"] = result
        return out

    @property
    def label_histories(self) -> dict[str, HistoryFeatures]:
        """Per label with its own outcome, its as-of history (builders saved before labels: none)."""
        return getattr(self, "label_history_", None) or {}

    def _transform_all(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        parts = [compute_ticket_features(snapshots), self.history_.transform(snapshots)]
        for label, history in self.label_histories.items():
            rates = history.transform(snapshots)[list(RATE_FEATURES)]
            parts.append(rates.rename(columns={f: rate_feature(f, label) for f in RATE_FEATURES}))
        if self.text_ is not None:
            parts.append(self.text_.transform(snapshots))
        parts.append(self.transform_rates(snapshots))
        # float32 halves the matrix; LightGBM bins features anyway, so nothing is lost.
        frame = pd.concat([part.astype("float32") for part in parts], axis=1)
        for column, categories in self.categories_.items():
            values = self._category_values(snapshots, column)
            frame[column] = pd.Categorical(values.where(values.isin(categories)), categories=categories)
        return frame.reset_index(drop=True)

    def _category_values(self, snapshots: pd.DataFrame, column: str) -> pd.Series:
        """A categorical column as text, in normal form (features.schema.normalize_category) for
        builders fitted with it; builders saved before it read values as they are."""
        if column not in snapshots:
            return pd.Series(pd.NA, index=snapshots.index, dtype="string")
        if getattr(self, "category_normalization_", 0):
            return normalize_categories(snapshots[column], priority=column == "priority")
        return snapshots[column].astype("string")

    @property
    def categorical_features_(self) -> list[str]:
        return list(self.categories_)
