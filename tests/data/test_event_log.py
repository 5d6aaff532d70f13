"""Data tests on an event log: `pytest tests/data --data-path PATH` (default: generated demo data).

Checks that hold for any canonical log a model is trained on: it validates, its timelines
are coherent, and its labels exist in both classes at a plausible rate.
"""

from __future__ import annotations

import pytest

from features.schema import validate_events
from features.snapshots import build_snapshots
from training.train import read_event_log


@pytest.fixture(scope="module")
def events(demo_events_path):
    result = validate_events(read_event_log(demo_events_path))
    assert result.reject_share <= 0.05, f"{result.reject_share:.1%} of rows rejected"
    return result.events


def test_first_update_is_the_creation(events):
    first = events.groupby("ticket_id").first()
    assert (first["event_time"] == first["created_at"]).mean() >= 0.99


def test_counters_never_go_down_within_a_ticket(events):
    for column in ("reassignment_count", "reopen_count", "customer_messages", "agent_messages"):
        drops = events.groupby("ticket_id")[column].diff().lt(0).sum()
        assert drops == 0, f"{column} decreases {drops} times: not a 'so far' counter"


def test_escalation_levels_come_with_a_type(events):
    escalated = events[events["escalation_level"] > 0]
    assert escalated["escalation_type"].notna().mean() >= 0.99


def test_labels_have_both_classes_at_a_plausible_rate(events):
    snaps = build_snapshots(events)
    ticket_rate = snaps.groupby("ticket_id")["escalates"].max().mean()
    assert 0.02 <= ticket_rate <= 0.5, f"{ticket_rate:.1%} of tickets escalate"
    later = snaps[snaps["position"] >= 2]["escalates"].sum()
    assert later > 0, "no escalation after the first updates: snapshots add nothing"
