"""Point-in-time training rows: a ticket's state at creation and after each update, with its label.

A snapshot is the row of the event log at one update, so its features can only use what
that row says (counters *so far*); the label looks forward from the snapshot's time:
"does the escalation level rise later (within the horizon)?". Snapshots stop at the
first escalation (afterwards the question is answered) and at close.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import PRIORITY_ORDER

LABEL = "escalates"
PRIORITY_TARGET = "priority_target"
SNAPSHOT_TIME = "snapshot_time"
POSITION = "position"
# Columns that only exist on training rows; never features, never in a live ticket.
LABEL_COLUMNS = (LABEL, PRIORITY_TARGET, "escalates_at", "label_known")


def find_first_escalations(events: pd.DataFrame) -> pd.Series:
    """Time of each ticket's first escalation-level rise above its level at creation (NaT if none)."""
    level = events["escalation_level"].to_numpy()
    first_level = events.groupby("ticket_id", sort=False)["escalation_level"].transform("first").to_numpy()
    rises = events.loc[level > first_level, ["ticket_id", "event_time"]]
    return rises.groupby("ticket_id", sort=False)["event_time"].min()


def find_final_priorities(events: pd.DataFrame) -> pd.Series:
    """The priority people settled on: the last known priority of each ticket."""
    known = events.dropna(subset=["priority"])
    return known.groupby("ticket_id", sort=False)["priority"].last()


def _lookup_times(times_by_ticket: pd.Series, ticket_ids: pd.Series) -> pd.Series:
    looked_up = times_by_ticket.astype("datetime64[ns, UTC]").reindex(ticket_ids.to_numpy())
    return pd.Series(looked_up.array, index=ticket_ids.index)


def build_snapshots(
    events: pd.DataFrame,
    max_per_ticket: int = 12,
    closed_statuses: tuple[str, ...] | list[str] = ("closed",),
    horizon_hours: float | None = 336,
    data_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per (ticket, update) before the first escalation, labelled from what follows.

    Events must be validated and sorted by ticket and time (features.schema.validate_events).
    Rows whose label is not yet knowable at `data_end` (ticket still open, horizon not
    elapsed, no escalation seen) are dropped rather than called negative.
    """
    data_end = data_end if data_end is not None else events["event_time"].max()
    frame = events.copy()
    frame[POSITION] = frame.groupby("ticket_id", sort=False).cumcount()
    first_escalation = find_first_escalations(frame)
    frame["escalates_at"] = _lookup_times(first_escalation, frame["ticket_id"])

    closed = frame["status"].isin(list(closed_statuses)).fillna(False)
    ticket_closed_at = frame.loc[closed].groupby("ticket_id", sort=False)["event_time"].min()
    frame["closed_at_"] = _lookup_times(ticket_closed_at, frame["ticket_id"])

    before_escalation = frame["escalates_at"].isna() | (frame["event_time"] < frame["escalates_at"])
    keep = before_escalation & ~closed & (frame[POSITION] < max_per_ticket)
    snaps = frame.loc[keep].copy()

    wait = snaps["escalates_at"] - snaps["event_time"]
    if horizon_hours is None:
        positive = snaps["escalates_at"].notna()
        horizon_end = pd.Series(pd.Timestamp.max.tz_localize("UTC"), index=snaps.index)
    else:
        horizon = pd.Timedelta(hours=horizon_hours)
        positive = snaps["escalates_at"].notna() & (wait <= horizon)
        horizon_end = snaps["event_time"] + horizon
    # A negative is known once the ticket closed or the horizon passed inside the data.
    known_negative = snaps["closed_at_"].notna() | (horizon_end <= data_end)
    snaps["label_known"] = positive | known_negative
    snaps[LABEL] = positive.astype("int8")
    snaps = snaps.loc[snaps["label_known"]]

    final_priority = find_final_priorities(events)
    snaps[PRIORITY_TARGET] = snaps["ticket_id"].map(final_priority)
    snaps[SNAPSHOT_TIME] = snaps["event_time"]
    return snaps.drop(columns=["closed_at_"]).reset_index(drop=True)


def encode_priority(values: pd.Series) -> np.ndarray:
    """low/normal/high/urgent as 0..3 (unknown: -1), the class index of the priority model."""
    lookup = {name: i for i, name in enumerate(PRIORITY_ORDER)}
    return values.map(lookup).fillna(-1).astype("int64").to_numpy()
