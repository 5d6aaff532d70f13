"""Several labels from one log: typed rises, counter rises and SLA misses, worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build import FeatureBuilder
from features.history import summarize_tickets
from features.labels import (
    LabelRule,
    add_label_outcomes,
    label_column,
    pick_likely_type,
    rate_feature,
    select_label_features,
)
from features.schema import validate_events
from features.snapshots import build_label_snapshots, build_snapshots, find_outcome_times
from tests.helpers import make_log, make_ticket

ANY = LabelRule("any")
FUNCTIONAL = LabelRule("functional", rise_type="functional")
HIERARCHICAL = LabelRule("hierarchical", rise_type="hierarchical")
REASSIGNED = LabelRule("reassigned", rule="counter_rise", min_rise=2, horizon_hours=None)
SLA = LabelRule("sla", rule="sla_missed", horizon_hours=None)


def _events() -> pd.DataFrame:
    return validate_events(make_log(
        # functional escalation at hour 30, then reassigned twice more, closed at 60
        make_ticket("T1", "2025-03-01 09:00", [
            {"hours": 1},
            {"hours": 30, "escalation_level": 1, "escalation_type": "functional", "reassignment_count": 1},
            {"hours": 40, "reassignment_count": 2},
            {"hours": 50, "reassignment_count": 3},
            {"hours": 60, "status": "closed"},
        ]),
        # hierarchical escalation at hour 5, closed within its SLA (due at 24 h)
        make_ticket("T2", "2025-03-02 09:00", [
            {"hours": 5, "escalation_level": 1, "escalation_type": "hierarchical"},
            {"hours": 6, "status": "closed"},
        ], customer_id="C2"),
        # no escalation; open past its due time (24 h) until closed at 40 h: SLA missed at 24 h
        make_ticket("T3", "2025-03-03 09:00", [{"hours": 2}, {"hours": 40, "status": "closed"}]),
        # a priority change at hour 3 moves the due time to hour 2 (already past): missed at hour 3
        make_ticket("T4", "2025-03-04 09:00", [
            {"hours": 3, "priority": "urgent", "sla_due_at": pd.Timestamp("2025-03-04 11:00", tz="UTC")},
            {"hours": 8, "status": "closed"},
        ], customer_id="C3"),
        # closed at hour 1, well within its SLA: no miss
        make_ticket("T5", "2025-03-20 09:00", [{"hours": 1, "status": "closed"}], customer_id="C4"),
    )).events


def _by_ticket(snaps: pd.DataFrame, column: str) -> dict[str, list[int]]:
    return {t: group[column].tolist() for t, group in snaps.groupby("ticket_id", sort=True)}


def test_typed_rises_split_the_any_rise_positives_on_the_same_rows():
    snaps = build_label_snapshots(_events(), [ANY, FUNCTIONAL, HIERARCHICAL])
    alone = build_snapshots(_events())
    assert len(snaps) == len(alone), "typed labels ask where the any-rise label asks"
    assert _by_ticket(snaps, label_column("any")) == _by_ticket(alone, "escalates")
    assert _by_ticket(snaps, label_column("functional"))["T1"] == [1, 1]
    assert _by_ticket(snaps, label_column("functional"))["T2"] == [0]
    assert _by_ticket(snaps, label_column("hierarchical"))["T1"] == [0, 0]
    assert _by_ticket(snaps, label_column("hierarchical"))["T2"] == [1]
    typed = snaps[label_column("functional")] + snaps[label_column("hierarchical")]
    np.testing.assert_array_equal(typed, snaps[label_column("any")])
    np.testing.assert_array_equal(snaps["escalates"], snaps[label_column("any")])


def test_a_counter_label_asks_after_the_first_escalation_where_the_rise_label_does_not():
    snaps = build_label_snapshots(_events(), [ANY, REASSIGNED])
    t1 = snaps[snaps["ticket_id"] == "T1"]
    assert t1["position"].tolist() == [0, 1, 2, 3, 4], "every update before close asks the counter question"
    assert t1[label_column("reassigned")].tolist() == [1, 1, 1, 0, 0], "two more reassignments follow updates 0-2 only"
    assert t1[label_column("any")].tolist() == [1, 1, -1, -1, -1], "no rise question after the escalation"
    assert t1["escalates"].tolist() == t1[label_column("any")].tolist(), "`escalates` is the primary label's"


def test_sla_missed_dates_the_miss_while_open_and_stops_the_snapshots_there():
    events = _events()
    misses = find_outcome_times(events, SLA, ["closed"])
    assert misses["T3"] == pd.Timestamp("2025-03-04 09:00", tz="UTC"), "due 24 h after opening, still open then"
    assert misses["T4"] == pd.Timestamp("2025-03-04 12:00", tz="UTC"), "the update that moved the due time into the past"
    assert misses["T1"] == pd.Timestamp("2025-03-02 09:00", tz="UTC")
    assert "T2" not in misses and "T5" not in misses, "closed within the SLA"
    snaps = build_label_snapshots(events, [SLA])
    assert _by_ticket(snaps, "escalates")["T3"] == [1, 1], "the update at 40 h comes after the miss: not a snapshot"
    assert _by_ticket(snaps, "escalates")["T4"] == [1]
    assert _by_ticket(snaps, "escalates")["T5"] == [0]


def test_outcome_times_count_each_labels_own_event():
    events = _events()
    assert set(find_outcome_times(events, FUNCTIONAL, ["closed"]).index) == {"T1"}
    assert set(find_outcome_times(events, HIERARCHICAL, ["closed"]).index) == {"T2"}
    reassigned = find_outcome_times(events, REASSIGNED, ["closed"])
    assert reassigned["T1"] == pd.Timestamp("2025-03-03 01:00", tz="UTC"), "the count reaches 0 + 2 at hour 40"
    assert set(find_outcome_times(events, ANY, ["closed"]).index) == {"T1", "T2"}


def test_each_label_gets_as_of_rates_of_its_own_outcome():
    """Customer C1's ended tickets: T1 (functional, closed 3 Mar 21:00) and T3 (no escalation, closed
    5 Mar 01:00). At a snapshot of a new C1 ticket on 6 Mar, the smoothed functional rate counts one
    functional escalation of two ended tickets; the hierarchical one counts none."""
    events = _events()
    newcomer = validate_events(make_log(make_ticket("T9", "2025-03-06 09:00", []))).events
    tickets = summarize_tickets(events, ["closed"])
    tickets = add_label_outcomes(tickets, {rule.name: find_outcome_times(events, rule, ["closed"])
                                           for rule in (FUNCTIONAL, HIERARCHICAL)})
    snaps = build_snapshots(events)
    builder = FeatureBuilder(text_enabled=False, history_smoothing=0.0).fit(snaps, tickets)
    row = newcomer.assign(snapshot_time=newcomer["event_time"])
    features = builder.transform(row).iloc[0]
    assert features["customer_past_tickets"] == 2
    assert features["customer_escalation_rate"] == pytest.approx(0.5), "any rise: T1 of T1, T3"
    assert features[rate_feature("customer_escalation_rate", "functional")] == pytest.approx(0.5)
    assert features[rate_feature("customer_escalation_rate", "hierarchical")] == pytest.approx(0.0)
    assert features[rate_feature("customer_past_escalations", "functional")] == 1
    # As of 3 Mar 12:00 nothing of C1 had ended: no outcome leaks from the future.
    early = row.assign(snapshot_time=pd.Timestamp("2025-03-03 12:00", tz="UTC"))
    assert builder.transform(early).iloc[0][rate_feature("customer_past_escalations", "functional")] == 0


def test_a_labels_model_reads_its_own_rates_and_leaves_the_others():
    names = ["age_hours", "customer_escalation_rate", "group_escalation_rate", "group_past_tickets",
             rate_feature("customer_escalation_rate", "functional"), rate_feature("group_escalation_rate", "functional"),
             rate_feature("customer_escalation_rate", "sla"), "channel"]
    assert select_label_features(names, ANY) == ["age_hours", "customer_escalation_rate", "group_escalation_rate",
                                                 "group_past_tickets", "channel"]
    assert select_label_features(names, FUNCTIONAL) == [
        "age_hours", "group_past_tickets", rate_feature("customer_escalation_rate", "functional"),
        rate_feature("group_escalation_rate", "functional"), "channel"]
    assert select_label_features(names, FUNCTIONAL, exclude=["group_escalation_rate", "channel"]) == [
        "age_hours", "group_past_tickets", rate_feature("customer_escalation_rate", "functional")]


def test_the_likely_type_is_the_most_probable_typed_label():
    types = {"any": {"escalation_type": None, "probability": 0.9},
             "sla": {"escalation_type": "time_based", "probability": 0.3},
             "functional": {"escalation_type": "functional", "probability": 0.4}}
    assert pick_likely_type(types) == "functional"
    assert pick_likely_type({"any": {"escalation_type": None, "probability": 0.9}}) is None
