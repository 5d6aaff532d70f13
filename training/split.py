"""Time-ordered split by ticket creation: train on older tickets, validate, test on the newest.

A ticket's snapshots never straddle two parts, so no ticket teaches the model its own
future; history features stay point-in-time whatever the part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT = "split"


def split_by_time(snapshots: pd.DataFrame, train: float, valid: float) -> pd.DataFrame:
    """Add a `split` column (train/valid/test) from ticket creation-time quantiles."""
    created = snapshots.groupby("ticket_id", sort=False)["created_at"].first().sort_values(kind="stable")
    n = len(created)
    train_end = int(round(n * train))
    valid_end = int(round(n * (train + valid)))
    part = np.empty(n, dtype=object)
    part[:train_end] = "train"
    part[train_end:valid_end] = "valid"
    part[valid_end:] = "test"
    lookup = pd.Series(part, index=created.index)
    return snapshots.assign(**{SPLIT: snapshots["ticket_id"].map(lookup).astype("string")})


def describe_split(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Tickets, snapshots, positive rate and time window per part: the data window MLflow records.

    The positive rate is the primary label's, over the snapshots it asks about (`escalates` >= 0)."""
    grouped = snapshots.groupby(SPLIT, sort=False)
    asked = snapshots["escalates"].where(snapshots["escalates"] >= 0)
    table = pd.DataFrame(
        {
            "tickets": grouped["ticket_id"].nunique(),
            "snapshots": grouped.size(),
            "positive_rate": asked.groupby(snapshots[SPLIT], sort=False).mean(),
            "created_from": grouped["created_at"].min(),
            "created_to": grouped["created_at"].max(),
        }
    )
    return table.reindex([p for p in ("train", "valid", "test") if p in table.index])
