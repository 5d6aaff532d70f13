import pandas as pd

from features.schema import validate_events
from features.snapshots import build_snapshots, find_first_escalations
from tests.helpers import make_log, make_ticket


def _events() -> pd.DataFrame:
    log = make_log(
        # escalates at update 3 (hour 30): snapshots 0..2 are positive within a 336 h horizon
        make_ticket("T1", "2025-03-01 09:00", [
            {"hours": 1}, {"hours": 5, "priority": "high"},
            {"hours": 30, "escalation_level": 1, "escalation_type": "hierarchical", "event_type": "escalated"},
            {"hours": 40, "status": "closed", "event_type": "closed"},
        ]),
        # never escalates, closed
        make_ticket("T2", "2025-03-02 09:00", [{"hours": 2}, {"hours": 3, "status": "closed"}], customer_id="C2"),
        # escalates only after 20 days: negative under a 14-day horizon
        make_ticket("T3", "2025-03-03 09:00", [
            {"hours": 1},
            {"hours": 480, "escalation_level": 1, "escalation_type": "time_based"},
            {"hours": 500, "status": "closed"},
        ]),
        # still open at the end of the data, no escalation yet: label unknown, dropped
        make_ticket("T4", "2025-03-25 09:00", [{"hours": 1}]),
    )
    return validate_events(log).events


def test_first_escalation_is_the_first_level_rise():
    first = find_first_escalations(_events())
    assert first["T1"] == pd.Timestamp("2025-03-02 15:00", tz="UTC")
    assert "T2" not in first


def test_snapshots_stop_at_escalation_and_close_and_label_looks_forward():
    snaps = build_snapshots(_events(), horizon_hours=336)
    t1 = snaps[snaps.ticket_id == "T1"]
    assert t1["position"].tolist() == [0, 1, 2]
    assert t1["escalates"].tolist() == [1, 1, 1]
    assert t1["priority_target"].unique().tolist() == ["high"], "final priority, not the typed one"
    assert snaps[snaps.ticket_id == "T2"]["escalates"].tolist() == [0, 0]
    assert "closed" not in set(snaps["status"])


def test_horizon_and_unknown_labels():
    snaps = build_snapshots(_events(), horizon_hours=336)
    assert snaps[snaps.ticket_id == "T3"]["escalates"].tolist() == [0, 0]
    assert "T4" not in set(snaps["ticket_id"]), "an open ticket's future is unknown"
    no_horizon = build_snapshots(_events(), horizon_hours=None)
    assert no_horizon[no_horizon.ticket_id == "T3"]["escalates"].tolist() == [1, 1]


def test_snapshot_cap_per_ticket():
    snaps = build_snapshots(_events(), max_per_ticket=2)
    assert snaps.groupby("ticket_id").size().max() == 2
