"""Leakage audit of a raw export: find columns that carry the ticket's outcome onto early rows.

Exports often back-fill final-state values (closing code, resolver, resolution time, final
assignee) onto every update. A model trained on them looks brilliant and is useless on a
live ticket. Four checks, each with its reason in the table:

- never_changes: constant within every ticket while the ticket's other fields change, and
  not declared as set at creation (`known_at_creation`); a time column that lies after the
  update's own time is reported too;
- changes_at_close: almost all of its changes happen on the closing (or resolving) update;
- first_is_final: a column that does change, yet in tickets that move between teams its
  first known value already is its final one (ServiceNow's assigned_to names the final
  resolver on the first update, before the ticket reached the resolver's team);
- predicts_label: its value at the first update predicts the ticket's label suspiciously
  well on later tickets (target-encoded on the older half, scored on the newer half).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

AUDIT_COLUMNS = ("column", "tickets_changed", "changes_at_close", "first_is_final", "future_time",
                 "first_update_auc", "flagged", "reasons")


@dataclass
class AuditThresholds:
    """Where a column becomes suspicious; the defaults are documented in docs/mapping-files.md."""

    max_change_share_static: float = 0.005   # changes in at most this share of tickets = "never changes"
    min_close_change_share: float = 0.90     # this share of its changes on closing updates
    min_first_is_final: float = 0.50         # of tickets where it changes, first value == final value
    min_change_share_first_is_final: float = 0.10
    min_future_time_share: float = 0.50      # a time later than the update itself in this share of rows
    max_first_update_auc: float = 0.80       # first-update value alone scores at least this ROC-AUC
    known_at_creation: list[str] = field(default_factory=list)
    # Columns whose times lie after the update by design (an SLA due time): no future_time reason.
    future_by_design: list[str] = field(default_factory=list)


def _as_keys(values: pd.Series) -> np.ndarray:
    """Integer codes of the values (missing is its own code -1): fast equality within a ticket."""
    return pd.factorize(values, use_na_sentinel=True)[0]


def find_changed_tickets(values: pd.Series, ticket_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: did the value change from the previous update; per ticket: did it ever change."""
    keys = _as_keys(values)
    same_ticket = np.r_[False, ticket_codes[1:] == ticket_codes[:-1]]
    changed = same_ticket & np.r_[False, keys[1:] != keys[:-1]]
    n_tickets = int(ticket_codes.max(initial=-1)) + 1
    return changed, np.bincount(ticket_codes, weights=changed.astype(float), minlength=n_tickets) > 0


def measure_changes(values: pd.Series, ticket_codes: np.ndarray, closing: np.ndarray,
                    moved: np.ndarray | None = None) -> dict[str, float]:
    """Within-ticket change statistics of one column (rows sorted by ticket and time).

    `moved`: per ticket, whether the ticket changed teams (default: whether this column changed).
    """
    changed, changed_tickets = find_changed_tickets(values, ticket_codes)
    multi = np.bincount(ticket_codes) >= 2
    known = values.notna().to_numpy()
    frame = pd.DataFrame({"t": ticket_codes[known], "v": _as_keys(values)[known]})
    ends = frame.groupby("t", sort=True)["v"].agg(["first", "last"])
    first_is_last = np.zeros(len(changed_tickets), dtype=bool)
    has_value = np.zeros(len(changed_tickets), dtype=bool)
    first_is_last[ends.index.to_numpy()] = (ends["first"] == ends["last"]).to_numpy()
    has_value[ends.index.to_numpy()] = True
    among = (moved if moved is not None else changed_tickets) & has_value
    n_changed = changed_tickets[multi].sum()
    return {
        "tickets_changed": float(n_changed / max(multi.sum(), 1)),
        "changes_at_close": float(closing[changed].mean()) if changed.any() else np.nan,
        "first_is_final": float(first_is_last[among].mean()) if among.any() else np.nan,
    }


def is_running_counter(values: pd.Series, ticket_codes: np.ndarray) -> bool:
    """Numbers that never fall within a ticket (counters so far): back-filling would make them constant,
    so a counter's first value being its final one says nothing (it did not rise)."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() < 0.99 * values.notna().sum() or numbers.notna().sum() == 0:
        return False
    array = numbers.to_numpy(dtype="float64")
    same_ticket = np.r_[False, ticket_codes[1:] == ticket_codes[:-1]]
    previous = np.r_[np.nan, array[:-1]]
    return not bool((same_ticket & (array < previous)).any())


def measure_future_time(values: pd.Series, event_time: pd.Series, time_format: str | None) -> float:
    """Share of rows whose value, read as a time, lies more than an hour after the update's own time."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return np.nan
    sample = values.dropna()
    if sample.empty:
        return np.nan
    with warnings.catch_warnings():  # "could not infer format" on columns that are not times at all
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(values, format=time_format, errors="coerce", utc=True)
    if parsed.notna().sum() < 0.5 * len(sample):
        return np.nan
    later = parsed > event_time + pd.Timedelta(hours=1)
    return float(later[parsed.notna()].mean())


def measure_first_update_auc(first_values: pd.Series, label: pd.Series, opened: pd.Series,
                             smoothing: float = 20.0) -> float:
    """Out-of-time ROC-AUC of the first-update value as a target-encoded score."""
    order = opened.rank(method="first", pct=True)
    old = (order <= 0.5).to_numpy()
    keys = pd.Series(_as_keys(first_values))
    y = label.to_numpy(dtype=float)
    if len(np.unique(y[~old])) < 2:
        return np.nan
    rate = y[old].mean()
    stats = pd.DataFrame({"k": keys[old].to_numpy(), "y": y[old]}).groupby("k")["y"].agg(["sum", "count"])
    encoded = (stats["sum"] + smoothing * rate) / (stats["count"] + smoothing)
    score = keys[~old].map(encoded).astype("float64").fillna(rate).to_numpy()
    return float(roc_auc_score(y[~old], score))


def audit_columns(raw: pd.DataFrame, ticket_ids: pd.Series, event_time: pd.Series, closing: pd.Series,
                  labels: dict[str, pd.Series], thresholds: AuditThresholds | None = None,
                  time_format: str | None = None, skip: tuple[str, ...] = (),
                  team_column: str | None = None) -> pd.DataFrame:
    """One row per raw column: the measurements, whether it is flagged and why.

    `raw` rows must be sorted by ticket and time and aligned with `ticket_ids`, `event_time`
    (UTC) and `closing` (True on closing/resolving updates). `labels`: per ticket id, the
    label(s) the model will learn (0/1), used by the predicts_label check. `team_column`:
    the raw column of the assigned team, whose changes mark tickets that moved.
    """
    th = thresholds or AuditThresholds()
    codes = pd.factorize(ticket_ids, sort=False)[0]
    closing_arr = closing.fillna(False).to_numpy(dtype=bool)
    first_rows = np.r_[True, codes[1:] != codes[:-1]]
    first_ids = ticket_ids[first_rows].to_numpy()
    opened = pd.Series(event_time[first_rows].to_numpy(), index=first_ids)
    moved = find_changed_tickets(raw[team_column], codes)[1] if team_column in raw else None
    rows = []
    for column in raw.columns:
        if column in skip:
            continue
        stats = measure_changes(raw[column], codes, closing_arr, None if column == team_column else moved)
        stats["future_time"] = measure_future_time(raw[column], event_time, time_format)
        first_values = pd.Series(raw[column].to_numpy()[first_rows], index=first_ids)
        aucs = {name: measure_first_update_auc(first_values, label.reindex(first_ids).fillna(0), opened)
                for name, label in labels.items()}
        best = max((v for v in aucs.values() if not np.isnan(v)), default=np.nan)
        reasons = []
        if stats["tickets_changed"] <= th.max_change_share_static and column not in th.known_at_creation:
            reasons.append(f"never changes within a ticket ({stats['tickets_changed']:.2%} of tickets) "
                           "and is not declared known at creation")
        if stats["future_time"] >= th.min_future_time_share and column not in th.future_by_design:
            reasons.append(f"a time later than the update itself in {stats['future_time']:.0%} of rows")
        if stats["changes_at_close"] >= th.min_close_change_share and stats["tickets_changed"] > 0:
            reasons.append(f"{stats['changes_at_close']:.0%} of its changes are on the closing update")
        # Counters and times (an SLA due time moves with the priority, not the team) are not assignees.
        if (stats["first_is_final"] >= th.min_first_is_final
                and stats["tickets_changed"] >= th.min_change_share_first_is_final
                and np.isnan(stats["future_time"]) and not is_running_counter(raw[column], codes)):
            reasons.append(f"changes in {stats['tickets_changed']:.0%} of tickets, yet its first value is already "
                           f"the final one in {stats['first_is_final']:.0%} of tickets that moved teams (back-filled)")
        if best >= th.max_first_update_auc:
            which = max(aucs, key=lambda k: -1 if np.isnan(aucs[k]) else aucs[k])
            reasons.append(f"first-update value alone gives ROC-AUC {best:.3f} for {which}")
        rows.append({"column": column, **stats, "first_update_auc": best, "flagged": bool(reasons),
                     "reasons": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))


def format_audit_table(table: pd.DataFrame) -> str:
    """The table `escalation-risk audit-data` prints: flagged columns first, with reasons."""
    shown = table.sort_values(["flagged", "column"], ascending=[False, True])
    lines = [f"{'column':<24}{'changed':>8}{'@close':>8}{'1st=fin':>8}{'future':>8}{'AUC@1':>7}  flag  reasons"]

    def pct(v: float) -> str:
        return "-" if pd.isna(v) else f"{v:.1%}" if v < 0.1 else f"{v:.0%}"

    for r in shown.itertuples(index=False):
        auc = "-" if pd.isna(r.first_update_auc) else f"{r.first_update_auc:.3f}"
        lines.append(f"{str(r.column)[:23]:<24}{pct(r.tickets_changed):>8}{pct(r.changes_at_close):>8}"
                     f"{pct(r.first_is_final):>8}{pct(r.future_time):>8}{auc:>7}  "
                     f"{'YES ' if r.flagged else '    '}  {r.reasons}")
    return "\n".join(lines)
