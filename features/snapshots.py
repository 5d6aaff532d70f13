"""Point-in-time training rows: a ticket's state at creation and after each update, with its label.

A snapshot is the row of the event log at one update, so its features can only use what
that row says (counters *so far*); the label looks forward from the snapshot's time:
"does the escalation level rise later (within the horizon)?". Snapshots stop at the
first escalation (afterwards the question is answered) and at close. With the
counter_rise rule ("does this counter rise N more times later?", e.g. reassignments)
every update before close asks its own question and is a snapshot. Several labels
(features.labels) share one set of rows: the updates any of them asks about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.history import find_level_rises, mark_closing
from features.labels import LABEL_RULES, LabelRule, label_column
from features.schema import TARGET_PRIORITY_COLUMN

LABEL = "escalates"
PRIORITY_TARGET = "priority_target"
SNAPSHOT_TIME = "snapshot_time"
POSITION = "position"
# Columns that only exist on training rows; never features, never in a live ticket.
LABEL_COLUMNS = (LABEL, PRIORITY_TARGET, "escalates_at", "label_known")


def find_first_escalations(events: pd.DataFrame) -> pd.Series:
    """Time of each ticket's first escalation: its level rising above the previous update's (NaT if none).

    A drop (handed back to L1) is no escalation; a rise after it is (features.history.find_level_rises).
    """
    rises = events.loc[find_level_rises(events), ["ticket_id", "event_time"]]
    return rises.groupby("ticket_id", sort=False)["event_time"].min()


def find_final_priorities(events: pd.DataFrame) -> pd.Series:
    """The priority people settled on: the last known priority of each ticket.

    An importer may supply `target_priority` instead (ServiceNow's priority is a fixed
    function of impact x urgency, so its target is a time-to-resolve bucket there).
    """
    column = TARGET_PRIORITY_COLUMN if TARGET_PRIORITY_COLUMN in events else "priority"
    known = events.dropna(subset=[column])
    return known.groupby("ticket_id", sort=False)[column].last()


def find_counter_rises(events: pd.DataFrame, counter: str, min_rise: int) -> pd.Series:
    """Per row, when the ticket's `counter` first reaches (its highest value so far) + min_rise; NaT if never.

    Events are sorted by ticket and time; a running maximum makes the search monotone, so
    one binary search over (ticket, running max) answers every row at once.
    """
    codes = pd.factorize(events["ticket_id"], sort=False)[0].astype("int64")
    running = (pd.to_numeric(events[counter], errors="coerce").fillna(0).astype("int64")
               .groupby(codes).cummax().to_numpy())
    span = int(running.max(initial=0)) + min_rise + 1
    key = codes * span + running
    target = codes * span + running + min_rise
    hit = np.searchsorted(key, target, side="left")
    found = hit < len(key)
    found[found] = codes[hit[found]] == codes[found]
    times = events["event_time"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    out = np.full(len(events), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[found] = times[hit[found]]
    return pd.Series(pd.DatetimeIndex(out).tz_localize("UTC"), index=events.index)


def _lookup_times(times_by_ticket: pd.Series, ticket_ids: pd.Series) -> pd.Series:
    looked_up = times_by_ticket.astype("datetime64[ns, UTC]").reindex(ticket_ids.to_numpy())
    return pd.Series(looked_up.array, index=ticket_ids.index)


def find_first_escalation_types(events: pd.DataFrame) -> pd.Series:
    """The escalation_type recorded at each ticket's first escalation (find_first_escalations' moment);
    <NA> where the log does not say. Tickets that never escalated are absent."""
    first = find_first_escalations(events)
    if "escalation_type" not in events or first.empty:
        return pd.Series(pd.NA, index=first.index, dtype="string")
    at = _lookup_times(first, events["ticket_id"])
    rows = events.loc[(events["event_time"] == at).to_numpy(), ["ticket_id", "escalation_type"]]
    types = rows.groupby("ticket_id", sort=False, observed=True)["escalation_type"].first()
    return types.astype("string").reindex(first.index)


def find_sla_misses(events: pd.DataFrame, closed: pd.Series, data_end: pd.Timestamp) -> pd.Series:
    """When each ticket first missed its SLA: the due time in force passed while it was open (NaT-free:
    tickets that never missed are absent).

    The due time of an update holds until the next update (or the data's end, for a ticket still
    open); a miss is dated at that due time, or at the update that moved the due time into the past.
    """
    if "sla_due_at" not in events:
        return pd.Series(dtype="datetime64[ns, UTC]")
    ticket = events["ticket_id"].to_numpy()
    same_next = np.r_[ticket[1:] == ticket[:-1], False] if len(ticket) else np.zeros(0, dtype=bool)
    event_time = events["event_time"]
    next_time = event_time.shift(-1).where(same_next, data_end)
    due = events["sla_due_at"]
    missed = (~closed.to_numpy(dtype=bool)) & due.notna().to_numpy() & (due < next_time).fillna(False).to_numpy()
    when = due.where(due >= event_time, event_time)[missed]
    return when.groupby(events["ticket_id"][missed], sort=False).min()


@dataclass
class LabelRows:
    """One label applied to every row of an event log: `keep` = the label asks at this update and
    its answer is known; `positive` = it escalates that way later; `escalates_at` = when (row-aligned)."""

    keep: np.ndarray
    positive: np.ndarray
    escalates_at: pd.Series


def find_label_rows(events: pd.DataFrame, rule: LabelRule, position: pd.Series, closed: pd.Series,
                    closed_at: pd.Series, data_end: pd.Timestamp, max_per_ticket: int) -> LabelRows:
    """Which updates are snapshots of `rule` (features.labels) and their labels.

    Snapshots stop at the label's event (level_rise, sla_missed: afterwards the question is
    answered) and at close; counter_rise asks at every update before close. A typed level rise
    asks where the any-rise label asks, and is positive when that first rise is of its type.
    """
    event_time = events["event_time"]
    matches = None
    if rule.rule == "counter_rise":
        # Each update asks its own question ("N more rises from here?"): every update is a snapshot.
        escalates_at = find_counter_rises(events, rule.counter, rule.min_rise)
        before_escalation = pd.Series(True, index=events.index)
    elif rule.rule in ("level_rise", "sla_missed"):
        found = (find_first_escalations(events) if rule.rule == "level_rise"
                 else find_sla_misses(events, closed, data_end))
        escalates_at = _lookup_times(found, events["ticket_id"])
        before_escalation = escalates_at.isna() | (event_time < escalates_at)
        if rule.rule == "level_rise" and rule.rise_type is not None:
            first_type = find_first_escalation_types(events).reindex(events["ticket_id"].to_numpy())
            matches = (first_type.to_numpy(dtype=object, na_value=None) == rule.rise_type)
    else:
        raise ValueError(f"unknown label rule {rule.rule!r}: expected one of {', '.join(LABEL_RULES)}")
    keep = (before_escalation & ~closed & (position < max_per_ticket)).to_numpy()
    if rule.horizon_hours is None:
        within = escalates_at.notna()
        horizon_passed = pd.Series(False, index=event_time.index)
    else:
        horizon = pd.Timedelta(hours=rule.horizon_hours)
        within = escalates_at.notna() & ((escalates_at - event_time) <= horizon)
        horizon_passed = (event_time + horizon) <= data_end
    # A negative is known once the ticket closed or the horizon passed inside the data (or, for a
    # typed rise, once a rise of another type came first).
    label_known = (within | closed_at.notna() | horizon_passed).to_numpy()
    positive = within.to_numpy() if matches is None else within.to_numpy() & matches
    return LabelRows(keep=keep & label_known, positive=positive, escalates_at=escalates_at)


def find_outcome_times(events: pd.DataFrame, rule: LabelRule, closed_statuses: tuple[str, ...] | list[str],
                       data_end: pd.Timestamp | None = None) -> pd.Series:
    """Per ticket, when `rule`'s event happened at all in its life (absent = never): the outcome the
    as-of escalation rates count for that label (features.labels). A counter rise counts from the
    ticket's first update; a typed rise when the ticket's first escalation is of that type."""
    data_end = data_end if data_end is not None else events["event_time"].max()
    if rule.rule == "counter_rise":
        counts = pd.to_numeric(events[rule.counter], errors="coerce").fillna(0)
        start = counts.groupby(events["ticket_id"], sort=False).transform("first")
        reached = counts >= start + rule.min_rise
        return events.loc[reached.to_numpy(), "event_time"].groupby(
            events.loc[reached.to_numpy(), "ticket_id"], sort=False).min()
    if rule.rule == "sla_missed":
        closed = pd.Series(mark_closing(events["status"], closed_statuses).to_numpy(), index=events.index)
        return find_sla_misses(events, closed, data_end)
    first = find_first_escalations(events)
    if rule.rise_type is None:
        return first
    types = find_first_escalation_types(events)
    return first[(types == rule.rise_type).fillna(False).to_numpy()]


def build_snapshots(
    events: pd.DataFrame,
    max_per_ticket: int = 12,
    closed_statuses: tuple[str, ...] | list[str] = ("closed",),
    horizon_hours: float | None = 336,
    data_end: pd.Timestamp | None = None,
    rule: str = "level_rise",
    counter: str = "reassignment_count",
    min_rise: int = 1,
    rise_type: str | None = None,
) -> pd.DataFrame:
    """One row per (ticket, update) before the first escalation, labelled from what follows.

    Events must be validated and sorted by ticket and time (features.schema.validate_events).
    Rows whose label is not yet knowable at `data_end` (ticket still open, horizon not
    elapsed, no escalation seen) are dropped rather than called negative.
    """
    label = LabelRule(name="escalation", rule=rule, horizon_hours=horizon_hours, counter=counter,
                      min_rise=min_rise, rise_type=rise_type)
    return build_label_snapshots(events, [label], max_per_ticket, closed_statuses, data_end, add_columns=False)


def build_label_snapshots(
    events: pd.DataFrame,
    labels: list[LabelRule],
    max_per_ticket: int = 12,
    closed_statuses: tuple[str, ...] | list[str] = ("closed",),
    data_end: pd.Timestamp | None = None,
    add_columns: bool = True,
) -> pd.DataFrame:
    """Snapshots of several labels at once: the updates any label asks about, one feature row each.

    `labels[0]` is the primary label: its values are in `escalates` (and `escalates_at`). With
    `add_columns`, each label's values are also in `escalates__<name>` (features.labels.label_column),
    -1 on the rows it does not ask about (a counter rise asks after an escalation, a level rise
    does not). With one label the rows are exactly build_snapshots' rows.
    """
    data_end = data_end if data_end is not None else events["event_time"].max()
    # Work on columns, not a copy of the whole log: only the kept rows are copied once.
    position = events.groupby("ticket_id", sort=False).cumcount()
    closed = pd.Series(mark_closing(events["status"], closed_statuses).to_numpy(), index=events.index)
    closed_at = _lookup_times(
        events.loc[closed].groupby("ticket_id", sort=False)["event_time"].min(), events["ticket_id"]
    )
    found = {label.name: find_label_rows(events, label, position, closed, closed_at, data_end, max_per_ticket)
             for label in labels}
    rows = np.logical_or.reduce([f.keep for f in found.values()])
    primary = found[labels[0].name]
    snaps = events.loc[rows]
    snaps[POSITION] = position[rows].to_numpy()
    snaps["escalates_at"] = primary.escalates_at[rows].array
    snaps["label_known"] = True
    for name, label_rows in found.items():
        values = np.where(label_rows.keep, label_rows.positive, -1)[rows].astype("int8")
        if name == labels[0].name:
            snaps[LABEL] = values
        if add_columns:
            snaps[label_column(name)] = values
    snaps[PRIORITY_TARGET] = snaps["ticket_id"].map(find_final_priorities(events))
    snaps[SNAPSHOT_TIME] = snaps["event_time"]
    return snaps.reset_index(drop=True)
