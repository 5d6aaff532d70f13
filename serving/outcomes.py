"""The ticket store's outcomes for the next training: `escalation-risk db export --before CUTOFF`.

Writes a canonical event log (features/schema.py's columns) of every ticket the store knew by the
cut-off, each event's row being the ticket's merged state after it (serving/store/event_log.py),
as known at the cut-off: only events that happened AND were received by then. People's reported
outcomes (POST /v1/feedback with outcome "escalated", received by the cut-off) are folded in for
tickets whose log shows no escalation: one more row at the time it escalated (the feedback's
`escalated_at`, else when the feedback was received; never later than that), with the escalation
level one above the ticket's first and the reported type, so training's label rule (a level rise
after the snapshot) sees it. A reported "not_escalated" never overrides an escalation in the log.

`make train STORE_OUTCOMES=1 [CUTOFF=...]` exports, then trains on the demo (or DATA) log plus this
one with `--extra-data ... --cutoff ...`: every input is cut at the same moment (training/combine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from serving.store.event_log import EVENT_ID, RECEIVED_AT, find_ticket_ids, replay_states, to_event_frame
from serving.store.monitoring_tables import FeedbackRow
from serving.store.tickets import utc

FEEDBACK_EVENT = "escalated_per_feedback"


@dataclass
class Export:
    events: pd.DataFrame
    tickets: int
    feedback_folded: int
    feedback_ignored: int


def read_reported_escalations(engine: Engine, cutoff: datetime) -> pd.DataFrame:
    """Feedback saying a ticket escalated, received by the cut-off (the first report per ticket)."""
    with Session(engine) as session:
        rows = session.execute(select(FeedbackRow.ticket_id, FeedbackRow.escalation_type, FeedbackRow.escalated_at,
                                      FeedbackRow.received_at)
                               .where(FeedbackRow.outcome == "escalated", FeedbackRow.received_at <= cutoff)
                               .order_by(FeedbackRow.received_at, FeedbackRow.id)).all()
    frame = pd.DataFrame(rows, columns=["ticket_id", "escalation_type", "escalated_at", "received_at"])
    return frame.drop_duplicates("ticket_id", keep="first")


def fold_reported_escalations(events: pd.DataFrame, reports: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """`events` plus one escalation row per reported escalation the log does not show; returns
    (events, folded, ignored: already escalated in the log, unknown ticket, or before its creation)."""
    if reports.empty or events.empty:
        return events, 0, len(reports)
    ordered = events.sort_values(["ticket_id", "event_time"], kind="stable")
    first_level = ordered.groupby("ticket_id", sort=False)["escalation_level"].first().fillna(0)
    max_level = ordered.groupby("ticket_id", sort=False)["escalation_level"].max().fillna(0)
    added, ignored = [], 0
    for report in reports.itertuples():
        if report.ticket_id not in first_level.index or max_level[report.ticket_id] > first_level[report.ticket_id]:
            ignored += 1
            continue
        received = pd.Timestamp(utc(report.received_at))
        when = min(pd.Timestamp(utc(report.escalated_at)), received) if pd.notna(report.escalated_at) else received
        rows = ordered[ordered["ticket_id"] == report.ticket_id]
        if when < rows["created_at"].iloc[0]:
            ignored += 1
            continue
        before = rows[rows["event_time"] <= when]
        row = (before if len(before) else rows).iloc[-1].copy()
        if when in set(rows["event_time"]):
            when = when + pd.Timedelta(seconds=1)  # one row per (ticket, time)
        row["event_time"] = when
        row["escalation_level"] = int(first_level[report.ticket_id]) + 1
        row["escalation_type"] = report.escalation_type
        row["event_type"] = FEEDBACK_EVENT
        added.append(row)
    if not added:
        return events, 0, ignored
    out = pd.concat([events, pd.DataFrame(added)], ignore_index=True)
    return out.sort_values(["ticket_id", "event_time"], kind="stable").reset_index(drop=True), len(added), ignored


def export_training_events(engine: Engine, cutoff: datetime, closed_statuses: list[str]) -> Export:
    """The store as known at `cutoff`, with reported escalations folded in (see the module docstring)."""
    ids = find_ticket_ids(engine, None, None, cutoff)
    events = to_event_frame(replay_states(engine, ids, closed_statuses, known_by=cutoff))
    events, folded, ignored = fold_reported_escalations(events, read_reported_escalations(engine, cutoff))
    return Export(events.drop(columns=[EVENT_ID, RECEIVED_AT]), events["ticket_id"].nunique(), folded, ignored)


def write_export(export: Export, output_path: Path) -> Path:
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    export.events.to_parquet(output_path, index=False)
    return output_path
