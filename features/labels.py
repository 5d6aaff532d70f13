"""Several labels from one event log: each kind of escalation a ticket history records.

A label is a rule that says, for each snapshot, whether the ticket escalates in a given way
later (features.snapshots applies it). One bundle can hold a model per label on one shared
feature matrix (training.train); one label is primary (the champion gate and the response's
`escalation.probability` use it). The rules:

- `level_rise`: the escalation level rises later (within the horizon). With `rise_type`,
  only when that first rise is of this escalation type ("the ticket's next escalation is
  functional"): the typed labels share the `level_rise` snapshots and split its positives.
- `counter_rise`: a counter (e.g. reassignment_count) rises at least `min_rise` more times.
- `sla_missed`: the SLA due time (`sla_due_at`) passes while the ticket is still open.

The as-of escalation rates of customers, agents and teams (features.history) count the
outcome each model predicts: a label whose outcome is not "any level rise" gets its own rate
features, named `<rate feature>__<label>`, and its model uses those instead of the any-rise ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.history import ENTITIES

# The five kinds contact centres tell apart (also the escalation matrix's `escalation_type`).
ESCALATION_TYPES = ("hierarchical", "functional", "time_based", "priority", "customer_initiated")
LABEL_RULES = ("level_rise", "counter_rise", "sla_missed")
# Label-dependent history features: those that count escalations (the others count tickets).
RATE_FEATURES = (*(f"{entity}_escalation_rate" for entity in ENTITIES), "customer_past_escalations")
LABEL_PREFIX = "escalates__"
OUTCOME_PREFIX = "escalated__"
OUTCOME_TIME_PREFIX = "escalated_at__"
SEPARATOR = "__"


@dataclass(frozen=True)
class LabelRule:
    """One label's definition (training.config.LabelParams.to_rule builds it from the params file).

    `escalation_type`: the kind of escalation the label stands for (reported with its score,
    matched by the escalation matrix); None = any kind."""

    name: str
    rule: str = "level_rise"
    horizon_hours: float | None = 336
    counter: str = "reassignment_count"
    min_rise: int = 2
    rise_type: str | None = None
    escalation_type: str | None = None

    @property
    def own_outcome(self) -> bool:
        """Whether its ticket outcome differs from "the level rose" (then it has its own rate features)."""
        return not (self.rule == "level_rise" and self.rise_type is None)


def label_column(name: str) -> str:
    """The snapshot column with label `name`: 1 / 0, or -1 where the label does not ask (not its snapshot)."""
    return f"{LABEL_PREFIX}{name}"


def rate_feature(feature: str, label: str) -> str:
    """A rate feature counted for `label`'s outcome, e.g. group_escalation_rate__sla."""
    return f"{feature}{SEPARATOR}{label}"


def base_feature(name: str) -> str:
    """The built-in feature a (possibly per-label) feature name stands for."""
    return name.split(SEPARATOR, 1)[0]


def list_outcome_labels(tickets: pd.DataFrame) -> list[str]:
    """Labels with their own ticket outcome in a summarize_tickets table (add_label_outcomes added them)."""
    return [c.removeprefix(OUTCOME_PREFIX) for c in tickets.columns if c.startswith(OUTCOME_PREFIX)]


def add_label_outcomes(tickets: pd.DataFrame, outcome_times: dict[str, pd.Series]) -> pd.DataFrame:
    """The ticket table with, per label, `escalated__<label>` (0/1) and `escalated_at__<label>` (UTC).

    `outcome_times`: per label, each ticket's time of the label's event (NaT = never), as
    features.snapshots.find_outcome_times gives it; tickets are matched by ticket_id (a
    ticket may have several rows)."""
    out = tickets.copy()
    ids = out["ticket_id"].astype("string").to_numpy()
    for name, times in outcome_times.items():
        times = pd.to_datetime(times, utc=True)
        times.index = times.index.astype("string")
        at = times.reindex(ids)
        out[f"{OUTCOME_TIME_PREFIX}{name}"] = at.array
        out[f"{OUTCOME_PREFIX}{name}"] = at.notna().to_numpy().astype("int8")
    return out


def outcome_table(tickets: pd.DataFrame, label: str) -> pd.DataFrame:
    """The ticket table with `label`'s outcome in place of the any-rise one, for a HistoryFeatures fit."""
    replace = {"escalated": tickets[f"{OUTCOME_PREFIX}{label}"].to_numpy()}
    if "escalated_at" in tickets:  # a table that times each outcome
        replace["escalated_at"] = tickets[f"{OUTCOME_TIME_PREFIX}{label}"].array
    drop = [c for c in tickets.columns if c.startswith((OUTCOME_PREFIX, OUTCOME_TIME_PREFIX))]
    return tickets.drop(columns=drop).assign(**replace)


def expand_exclusions(excluded: list[str], labels: list[str]) -> list[str]:
    """Built-in feature names to leave out, with each label's own version of an excluded rate."""
    out = list(excluded)
    out += [rate_feature(f, label) for f in excluded if f in RATE_FEATURES for label in labels]
    return out


def select_label_features(feature_names: list[str], rule: LabelRule, exclude: list[str] = ()) -> list[str]:
    """The columns of the shared matrix a label's model uses, in matrix order.

    Every built-in feature except the escalation rates of other outcomes: a label with its own
    outcome uses its `__<label>` rates instead of the any-rise ones. `exclude`: built-in names
    this label's model leaves out (its own version of a rate included)."""
    left_out = set(exclude)
    chosen = []
    for name in feature_names:
        base, _, owner = name.partition(SEPARATOR)
        if base in left_out:
            continue
        if owner:
            if owner == rule.name:
                chosen.append(name)
        elif not (base in RATE_FEATURES and rule.own_outcome):
            chosen.append(name)
    return chosen


def common_features(feature_names: list[str]) -> list[str]:
    """The shared matrix without the per-label rate columns (what the priority model uses)."""
    return [name for name in feature_names if SEPARATOR not in name]


def pick_likely_type(types: dict[str, dict]) -> str | None:
    """The escalation type of the typed label with the highest probability (None without typed labels).

    `types`: per label, a dict with `escalation_type` and `probability`."""
    best, best_p = None, -np.inf
    for entry in types.values():
        kind = entry.get("escalation_type")
        if kind is not None and entry["probability"] > best_p:
            best, best_p = kind, entry["probability"]
    return best
