"""Several event logs as one training input, all cut at the same moment (leak-free by construction).

`make train STORE_OUTCOMES=1` trains on the demo (or DATA) log plus the ticket store's own log
(`escalation-risk db export --before CUTOFF`, serving/outcomes.py). Every event after the cut-off is
dropped from every input, so the newest snapshots' labels are judged only by what was known at the
cut-off (build_snapshots leaves a label out until it is known). A ticket found in several logs keeps
the rows of the LAST log that has it (the store's: what the service saw, plus reported outcomes).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from features.schema import parse_times
from training.train import read_event_log


def combine_event_logs(paths: list[Path], cutoff: datetime | None = None) -> tuple[pd.DataFrame, dict]:
    """One event log from `paths` (Parquet/CSV canonical logs, in order of precedence: later wins per
    ticket), without events after `cutoff` (UTC). Returns (events, summary of rows and tickets per input).
    Raises FileNotFoundError for a missing input, ValueError for an input without ticket_id / event_time."""
    frames, summary, owner = [], {"inputs": []}, {}
    cut = None if cutoff is None else pd.Timestamp(cutoff).tz_convert("UTC") if pd.Timestamp(cutoff).tzinfo \
        else pd.Timestamp(cutoff).tz_localize("UTC")
    for position, path in enumerate(paths):
        frame = read_event_log(Path(path))
        missing = {"ticket_id", "event_time"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path} is not an event log: no {', '.join(sorted(missing))} column")
        frame["ticket_id"] = frame["ticket_id"].astype("string")
        rows = len(frame)
        if cut is not None:
            frame = frame[(parse_times(frame["event_time"]) <= cut).to_numpy()]
        for ticket_id in frame["ticket_id"].unique():
            owner[ticket_id] = position
        frames.append(frame)
        summary["inputs"].append({"path": str(path), "rows": rows, "rows_after_cutoff": rows - len(frame),
                                  "tickets": int(frame["ticket_id"].nunique())})
    kept = []
    for position, frame in enumerate(frames):
        mine = frame["ticket_id"].map(owner).to_numpy() == position
        kept.append(frame[mine])
        summary["inputs"][position]["tickets_kept"] = int(frame.loc[mine, "ticket_id"].nunique())
    combined = pd.concat(kept, ignore_index=True)
    summary["cutoff"] = None if cut is None else cut.isoformat()
    summary["rows"], summary["tickets"] = len(combined), int(combined["ticket_id"].nunique())
    return combined, summary
