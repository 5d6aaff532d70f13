"""Leakage tripwires: a snapshot's features may use nothing from after its own time.

The strongest check rebuilds the world as it was at a snapshot's time (every event after
it removed, for every ticket) and demands the very same features as the full log gives.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.history import HistoryFeatures, summarize_tickets
from features.schema import validate_events
from features.snapshots import build_snapshots
from features.synthetic import simulate_events


@pytest.fixture(scope="module")
def world():
    events = validate_events(simulate_events(n_tickets=1500, seed=3, months=3)).events
    snaps = build_snapshots(events, horizon_hours=None)
    builder = FeatureBuilder(text_params={"svd_components": 8, "min_df": 2}).fit(snaps, summarize_tickets(events))
    return events, snaps, builder, builder.transform(snaps)


def _features_as_of(builder: FeatureBuilder, events: pd.DataFrame, snap: pd.Series) -> pd.Series:
    """Features of one snapshot computed from only the events known at its time."""
    t = snap["snapshot_time"]
    known = events[events["event_time"] <= t]
    as_of = copy.copy(builder)
    as_of.history_ = HistoryFeatures(builder.history_windows_days, builder.history_smoothing).fit(
        summarize_tickets(known)
    )
    as_of.history_.prior_ = builder.history_.prior_  # learned state, fixed at training
    row = known[known["ticket_id"] == snap["ticket_id"]].tail(1).copy()
    row["snapshot_time"] = t
    return as_of.transform(row).iloc[0]


def test_features_equal_those_built_from_the_past_alone(world):
    events, snaps, builder, full = world
    sample = snaps.sample(60, random_state=1)
    assert sample["position"].nunique() > 3
    for index, snap in sample.iterrows():
        past_only = _features_as_of(builder, events, snap)
        pd.testing.assert_series_equal(
            past_only, full.loc[index], check_names=False, obj=f"snapshot {snap.ticket_id}@{snap.position}"
        )


def test_altering_a_tickets_later_events_changes_none_of_its_snapshots(world):
    events, snaps, builder, full = world
    ticket = snaps.loc[snaps["position"] == 2, "ticket_id"].iloc[0]
    cut = snaps.loc[(snaps.ticket_id == ticket) & (snaps.position == 2), "snapshot_time"].iloc[0]
    altered = events.copy()
    later = (altered["ticket_id"] == ticket) & (altered["event_time"] > cut)
    altered.loc[later, "escalation_level"] = 7
    altered.loc[later, "customer_messages"] = 99
    altered.loc[later, "description"] = "I will sue you, my lawyer is calling"
    altered.loc[later, "priority"] = "urgent"
    altered_snaps = build_snapshots(altered, horizon_hours=None)
    mine = altered_snaps[(altered_snaps.ticket_id == ticket) & (altered_snaps.position <= 2)]
    original = snaps[(snaps.ticket_id == ticket) & (snaps.position <= 2)]
    builder_altered = copy.copy(builder)
    builder_altered.history_ = HistoryFeatures(builder.history_windows_days, builder.history_smoothing).fit(
        summarize_tickets(altered)
    )
    builder_altered.history_.prior_ = builder.history_.prior_
    pd.testing.assert_frame_equal(builder_altered.transform(mine), full.loc[original.index].reset_index(drop=True))
    assert mine["escalates"].tolist() == [1, 1, 1], "the label, and only the label, sees the future"


def test_outcome_and_label_columns_are_never_features(world):
    _, snaps, builder, full = world
    forbidden = {"escalation_type", "escalates", "escalates_at", "priority_target", "label_known", "ticket_id",
                 "customer_id", "agent_id"}
    assert not forbidden & set(builder.feature_names_)
    scrambled = snaps.copy()
    scrambled["escalation_type"] = "hierarchical"
    scrambled["escalates"] = 1 - scrambled["escalates"]
    scrambled["escalates_at"] = pd.Timestamp("2000-01-01", tz="UTC")
    scrambled["priority_target"] = "urgent"
    pd.testing.assert_frame_equal(builder.transform(scrambled), full)
