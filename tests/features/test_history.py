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


def _reopened_log() -> pd.DataFrame:
    """T1 closes on day 1, reopens on day 3, escalates on day 4, closes again on day 5."""
    return validate_events(make_log(
        make_ticket("T1", "2025-03-01 09:00", [
            {"hours": 24, "status": "closed"},
            {"hours": 72, "status": "open", "reopen_count": 1},
            {"hours": 96, "escalation_level": 1, "escalation_type": "hierarchical"},
            {"hours": 120, "status": "closed"},
        ]),
        make_ticket("T2", "2025-03-01 10:00", [{"hours": 2, "status": "closed"}]),
    )).events


def test_a_ticket_is_ended_only_while_it_is_closed_and_its_outcome_as_known_then():
    history = HistoryFeatures(smoothing=0).fit(summarize_tickets(_reopened_log()))
    at = {day: history.transform(_snapshot("T9", f"2025-03-0{day} 12:00")) for day in (2, 4, 5, 7)}
    assert at[2]["customer_past_tickets"].item() == 2, "T1 closed on day 2: ended then, whatever came later"
    assert at[2]["customer_escalation_rate"].item() == 0.0, "its later escalation was not known on day 2"
    assert at[4]["customer_past_tickets"].item() == 1, "reopened on day 4: open again"
    assert at[5]["customer_past_tickets"].item() == 1 and at[5]["customer_past_escalations"].item() == 0
    assert at[7]["customer_past_tickets"].item() == 2 and at[7]["customer_past_escalations"].item() == 1
    assert at[4]["agent_open_tickets"].item() == 1, "T1 reopened counts as open again"


def test_the_prior_is_read_at_the_end_of_the_fitting_period_only():
    log = _reopened_log()
    as_of = pd.Timestamp("2025-03-03 00:00", tz="UTC")
    history = HistoryFeatures(smoothing=10).fit(summarize_tickets(log), as_of=as_of)
    assert history.prior_ == 0.0, "on 3 March two tickets had ended, neither escalated as far as anyone knew"
    later = log.copy()
    later.loc[later["event_time"] > as_of, "escalation_level"] = 3  # outcomes after the fitting period
    altered = HistoryFeatures(smoothing=10).fit(summarize_tickets(later), as_of=as_of)
    assert altered.prior_ == history.prior_
    everything = HistoryFeatures(smoothing=10).fit(summarize_tickets(later))
    assert everything.prior_ == 0.5, "read over the whole log, the later escalation would have moved it"
