"""Point-in-time training rows: a ticket's state at creation and after each update, with its label.

A snapshot is the row of the event log at one update, so its features can only use what
that row says (counters *so far*); the label looks forward from the snapshot's time:
"does the escalation level rise later (within the horizon)?". Snapshots stop at the
first escalation (afterwards the question is answered) and at close. With the
counter_rise rule ("does this counter rise N more times later?", e.g. reassignments)
every update before close asks its own question and is a snapshot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.history import find_level_rises, mark_closing
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


def build_snapshots(
    events: pd.DataFrame,
    max_per_ticket: int = 12,
    closed_statuses: tuple[str, ...] | list[str] = ("closed",),
    horizon_hours: float | None = 336,
    data_end: pd.Timestamp | None = None,
    rule: str = "level_rise",
    counter: str = "reassignment_count",
    min_rise: int = 1,
) -> pd.DataFrame:
    """One row per (ticket, update) before the first escalation, labelled from what follows.

    Events must be validated and sorted by ticket and time (features.schema.validate_events).
    Rows whose label is not yet knowable at `data_end` (ticket still open, horizon not
    elapsed, no escalation seen) are dropped rather than called negative.
    """
    data_end = data_end if data_end is not None else events["event_time"].max()
    # Work on columns, not a copy of the whole log: only the kept rows are copied once.
    position = events.groupby("ticket_id", sort=False).cumcount()
    closed = pd.Series(mark_closing(events["status"], closed_statuses).to_numpy(), index=events.index)
    closed_at = _lookup_times(
        events.loc[closed].groupby("ticket_id", sort=False)["event_time"].min(), events["ticket_id"]
    )
    if rule == "counter_rise":
        # Each update asks its own question ("N more rises from here?"): every update is a snapshot.
        escalates_at = find_counter_rises(events, counter, min_rise)
        before_escalation = pd.Series(True, index=events.index)
    elif rule == "level_rise":
        escalates_at = _lookup_times(find_first_escalations(events), events["ticket_id"])
        before_escalation = escalates_at.isna() | (events["event_time"] < escalates_at)
    else:
        raise ValueError(f"unknown label rule {rule!r}: expected level_rise or counter_rise")
    keep = (before_escalation & ~closed & (position < max_per_ticket)).to_numpy()

    event_time = events["event_time"][keep]
    escalates_at, closed_at = escalates_at[keep], closed_at[keep]
    if horizon_hours is None:
        positive = escalates_at.notna()
        horizon_passed = pd.Series(False, index=event_time.index)
    else:
        horizon = pd.Timedelta(hours=horizon_hours)
        positive = escalates_at.notna() & ((escalates_at - event_time) <= horizon)
        horizon_passed = (event_time + horizon) <= data_end
    # A negative is known once the ticket closed or the horizon passed inside the data.
    label_known = (positive | closed_at.notna() | horizon_passed).to_numpy()

    rows = keep.copy()
    rows[keep] = label_known
    snaps = events.loc[rows]
    snaps[POSITION] = position[keep][label_known].to_numpy()
    snaps["escalates_at"] = escalates_at[label_known].array
    snaps["label_known"] = True
    snaps[LABEL] = positive[label_known].astype("int8").to_numpy()
    snaps[PRIORITY_TARGET] = snaps["ticket_id"].map(find_final_priorities(events))
    snaps[SNAPSHOT_TIME] = snaps["event_time"]
    return snaps.reset_index(drop=True)
