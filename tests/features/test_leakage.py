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
from features.sources.mapping import Mapping, apply_mapping, import_export, load_mapping, sort_export
from features.synthetic import ExportOptions, simulate_events, simulate_export
from tests.helpers import make_servicenow_export


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


# --- ServiceNow-shaped export: the mapping's extra fields (opened_by, updated_by, symptom, ...) ---
SN_EXTRAS = ["opened_by", "created_by", "updated_by", "location", "symptom", "impact", "urgency"]


def _import_rows(raw: pd.DataFrame, excluded: list[str]) -> pd.DataFrame:
    """The importer's rows for an export, with the audit's exclusions fixed at fit time."""
    mapping = load_mapping("servicenow")
    events = apply_mapping(sort_export(raw.reset_index(drop=True), mapping), mapping, set(excluded))
    events = events.loc[~events.duplicated(["ticket_id", "event_time"], keep="last")]
    return validate_events(events.reset_index(drop=True)).events


@pytest.fixture(scope="module")
def servicenow_world(tmp_path_factory):
    raw = make_servicenow_export(n_incidents=400, seed=11)
    path = tmp_path_factory.mktemp("sn_leak") / "export.csv"
    raw.to_csv(path, index=False)
    imported = import_export(path, load_mapping("servicenow"))
    assert set(SN_EXTRAS) <= set(imported.events.columns), "the extras must survive the audit here"
    events = _import_rows(raw, imported.excluded)
    snaps = build_snapshots(events, horizon_hours=None, rule="counter_rise", min_rise=2,
                            closed_statuses=["resolved", "closed"])
    builder = FeatureBuilder(text_enabled=False, extra_categorical=SN_EXTRAS, max_categories=200).fit(
        snaps, summarize_tickets(events, ["resolved", "closed"]))
    return raw, imported.excluded, snaps, builder, builder.transform(snaps)


def _servicenow_features_as_of(builder, raw, excluded, ticket_id, t) -> pd.Series:
    """Features of a ticket at time t from the export's rows up to t alone, history refitted on them."""
    updated = pd.to_datetime(raw["sys_updated_at"], format="%d/%m/%Y %H:%M", utc=True)
    known = _import_rows(raw[updated <= t], excluded)
    as_of = copy.copy(builder)
    as_of.history_ = HistoryFeatures(builder.history_windows_days, builder.history_smoothing).fit(
        summarize_tickets(known, ["resolved", "closed"]))
    as_of.history_.prior_ = builder.history_.prior_
    row = known[known["ticket_id"] == ticket_id].tail(1).copy()
    row["snapshot_time"] = t
    return as_of.transform(row).iloc[0]


def test_servicenow_extras_use_nothing_after_the_update(servicenow_world):
    """Every later row of every incident removed: the same features, extras included."""
    raw, excluded, snaps, builder, full = servicenow_world
    assert set(SN_EXTRAS) <= set(builder.categorical_features_)
    sample = snaps.sample(25, random_state=2)
    assert sample["position"].nunique() >= 3
    for index, snap in sample.iterrows():
        past_only = _servicenow_features_as_of(builder, raw, excluded, snap["ticket_id"], snap["snapshot_time"])
        pd.testing.assert_series_equal(past_only, full.loc[index], check_names=False,
                                       obj=f"snapshot {snap.ticket_id}@{snap.position}")


def test_altering_later_servicenow_rows_changes_no_earlier_extras(servicenow_world):
    """Who updates it later, its later symptom, location or impact: none reaches an earlier update."""
    raw, excluded, snaps, builder, full = servicenow_world
    ticket = snaps.loc[snaps["position"] == 1, "ticket_id"].iloc[3]
    cut = snaps.loc[(snaps.ticket_id == ticket) & (snaps.position == 1), "snapshot_time"].iloc[0]
    updated = pd.to_datetime(raw["sys_updated_at"], format="%d/%m/%Y %H:%M", utc=True)
    altered = raw.copy()
    later = updated > cut
    for column, value in {"sys_updated_by": "Updated by 99", "u_symptom": "Symptom 9", "location": "Location 0",
                          "impact": "1 - High", "urgency": "1 - High", "opened_by": "Opened by  0"}.items():
        altered.loc[later, column] = value
    events = _import_rows(altered, excluded)
    altered_snaps = build_snapshots(events, horizon_hours=None, rule="counter_rise", min_rise=2,
                                    closed_statuses=["resolved", "closed"])
    builder_altered = copy.copy(builder)
    builder_altered.history_ = HistoryFeatures(builder.history_windows_days, builder.history_smoothing).fit(
        summarize_tickets(events, ["resolved", "closed"]))
    builder_altered.history_.prior_ = builder.history_.prior_
    mine = altered_snaps[(altered_snaps.ticket_id == ticket) & (altered_snaps.position <= 1)]
    original = snaps[(snaps.ticket_id == ticket) & (snaps.position <= 1)]
    assert len(mine) == 2
    pd.testing.assert_frame_equal(builder_altered.transform(mine), full.loc[original.index].reset_index(drop=True))
    assert (altered_snaps.loc[altered_snaps.snapshot_time > cut, "updated_by"] == "Updated by 99").all()


# --- an export with reopenings, text levels and late-appearing entities: the log cut at time T ---
EXPORT_MAPPING = {
    "name": "service-desk", "columns": {"ticket_id": "Incident ID", "event_time": "Changed At",
                                        "status": ["Status", "Sub Status"], "group": "Team",
                                        "customer_id": "Customer", "agent_id": "Assignee", "category": "Category",
                                        "channel": "Channel", "reopen_count": "Reopens"},
    "created_at": "first_event", "closing_statuses": ["Completed / Resolved", "Completed / Closed"],
    "escalation": {"rule": "level_column", "column": "Support Level", "levels": ["L1", "L2", "L3"]},
    "extra": {"product": "Product"}, "audit": {"known_at_creation": ["Product", "Customer", "Category", "Channel"]},
}


def _cut_rows(raw: pd.DataFrame, mapping, excluded: list[str]) -> pd.DataFrame:
    return validate_events(apply_mapping(sort_export(raw.reset_index(drop=True), mapping), mapping,
                                         set(excluded))).events


@pytest.fixture(scope="module")
def reopening_world(tmp_path_factory):
    options = ExportOptions(reopen_closed_share=0.5, reopen_escalation_share=0.5, n_products=60)
    raw = simulate_export(500, seed=21, months=3, options=options)
    path = tmp_path_factory.mktemp("reopen") / "export.csv"
    raw.to_csv(path, index=False)
    mapping = Mapping.model_validate(EXPORT_MAPPING)
    imported = import_export(path, mapping)
    raw = pd.read_csv(path, dtype="string")
    events = _cut_rows(raw, mapping, imported.excluded)
    closing = mapping.closing_statuses
    snaps = build_snapshots(events, horizon_hours=None, closed_statuses=closing)
    fit_rows = snaps[snaps["created_at"] < snaps["created_at"].quantile(0.7)]
    builder = FeatureBuilder(text_enabled=False, extra_categorical=imported.feature_extras).fit(
        fit_rows, summarize_tickets(events, closing))
    return raw, mapping, imported.excluded, events, snaps, builder, builder.transform(snaps)


@pytest.mark.parametrize("share", [0.35, 0.8])
def test_every_snapshot_before_the_cut_has_the_features_of_the_log_cut_there(reopening_world, share):
    """Every later row of every ticket removed, reopenings and escalations after the cut included."""
    raw, mapping, excluded, events, snaps, builder, full = reopening_world
    cut = snaps["snapshot_time"].quantile(share)
    updated = pd.to_datetime(raw["Changed At"], utc=True)
    known = _cut_rows(raw[updated <= cut], mapping, excluded)
    closing = mapping.closing_statuses
    whole, part = summarize_tickets(events, closing), summarize_tickets(known, closing)
    reopened_later = whole[(whole["ended_at"] <= cut) & (whole["reopened_at"] > cut)]
    assert len(reopened_later) >= 5, "the cut must fall between closes and reopenings"
    assert set(whole["group"]) - set(part["group"]), "entities that appear only after the cut"
    as_of = copy.copy(builder)
    as_of.history_ = HistoryFeatures(builder.history_windows_days, builder.history_smoothing).fit(
        part, as_of=builder.history_as_of_)
    as_of.history_.prior_ = builder.history_.prior_  # learned state, fixed at the end of the fitting period
    before = snaps[snaps["snapshot_time"] <= cut]
    rows = known.merge(before[["ticket_id", "event_time", "snapshot_time"]], on=["ticket_id", "event_time"])
    assert len(rows) == len(before)
    order = before.reset_index().merge(rows[["ticket_id", "event_time"]].reset_index(names="row"),
                                       on=["ticket_id", "event_time"])
    rebuilt = as_of.transform(rows.loc[order["row"]].reset_index(drop=True))
    expected = full.loc[order["index"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(rebuilt, expected, obj=f"features of {len(before)} snapshots before the cut")
    touched = before["customer_id"].isin(reopened_later["customer_id"]) | before["group"].isin(reopened_later["group"])
    assert touched.sum() > 20, "snapshots whose entities had a ticket closed before the cut and reopened after it"
