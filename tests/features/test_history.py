import pandas as pd
import pytest

from features.history import HistoryFeatures, summarize_tickets
from features.schema import validate_events
from tests.helpers import make_log, make_ticket


def _log() -> pd.DataFrame:
    return validate_events(make_log(
        make_ticket("T1", "2025-03-01 09:00", [
            {"hours": 2, "escalation_level": 1, "escalation_type": "hierarchical"},
            {"hours": 48, "status": "closed"},
        ]),
        make_ticket("T2", "2025-03-02 09:00", [{"hours": 1}, {"hours": 100, "status": "closed"}]),
        make_ticket("T3", "2025-03-10 09:00", [{"hours": 1}, {"hours": 2, "status": "closed"}], agent_id="A2"),
    )).events


def _snapshot(ticket_id: str, at: str, **fields) -> pd.DataFrame:
    row = {"ticket_id": ticket_id, "snapshot_time": pd.Timestamp(at, tz="UTC"), "customer_id": "C1",
           "agent_id": "A1", "group": "billing_team", "category": "billing"} | fields
    return pd.DataFrame([row])


def test_summary_marks_escalated_and_end_times():
    summary = summarize_tickets(_log()).set_index("ticket_id")
    assert summary.loc["T1", "escalated"] == 1
    assert summary.loc["T2", "escalated"] == 0
    assert summary.loc["T1", "ended_at"] == pd.Timestamp("2025-03-03 09:00", tz="UTC")


def test_outcome_counts_only_after_the_ticket_ended():
    history = HistoryFeatures(smoothing=0).fit(summarize_tickets(_log()))
    # T1 escalated on 1 March but only ended on 3 March 09:00
    before = history.transform(_snapshot("T9", "2025-03-03 08:59"))
    after = history.transform(_snapshot("T9", "2025-03-03 09:01"))
    assert before["customer_past_tickets"].item() == 0
    assert after["customer_past_tickets"].item() == 1
    assert after["customer_escalation_rate"].item() == pytest.approx(1.0)
    late = history.transform(_snapshot("T9", "2025-03-07 00:00"))
    assert late["customer_past_tickets"].item() == 2
    assert late["customer_escalation_rate"].item() == pytest.approx(0.5)


def test_ticket_counts_exclude_the_ticket_itself_and_the_future():
    history = HistoryFeatures(windows_days=[7, 30]).fit(summarize_tickets(_log()))
    at_t2_creation = history.transform(_snapshot("T2", "2025-03-02 09:00"))
    assert at_t2_creation["customer_tickets_7d"].item() == 1, "T1 only: T2 itself is not counted"
    later = history.transform(_snapshot("T2", "2025-03-09 10:00"))
    assert later["customer_tickets_7d"].item() == 0, "T1 left the 7-day window; T3 not yet opened"
    assert later["customer_tickets_30d"].item() == 1
    open_now = history.transform(_snapshot("T9", "2025-03-02 12:00"))
    assert open_now["agent_open_tickets"].item() == 2


def test_unknown_entities_get_the_prior():
    history = HistoryFeatures(smoothing=10).fit(summarize_tickets(_log()))
    out = history.transform(_snapshot("T9", "2025-04-01", customer_id="NEW", agent_id="NEW", group="NEW"))
    assert out["customer_past_tickets"].item() == 0
    assert out["customer_escalation_rate"].item() == pytest.approx(history.prior_)
    assert history.prior_ == pytest.approx(1 / 3)
