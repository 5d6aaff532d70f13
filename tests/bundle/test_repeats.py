"""Repeat issues: the same customer back within N days (on the same topic or not)."""

from __future__ import annotations

import pandas as pd
import pytest

from bundle.repeats import mark_repeat_contacts, summarize_repeat_issues


def tickets() -> pd.DataFrame:
    day = pd.Timestamp("2025-03-01", tz="UTC")
    rows = [
        ("T1", "C1", "billing", 0, 0),
        ("T2", "C1", "billing", 3, 1),    # back on the same topic within 7 days
        ("T3", "C1", "billing", 20, 0),   # 17 days later: not a repeat
        ("T4", "C2", "billing", 1, 0),
        ("T5", "C2", "technical", 2, 0),  # back within 7 days on another topic
        ("T6", None, "billing", 2, 0),    # no customer: never a repeat
        ("T7", "C3", "billing", -5, 0),   # before the window
        ("T8", "C3", "billing", 1, 1),    # repeat of a ticket opened before the window
    ]
    return pd.DataFrame([{"ticket_id": t, "customer_id": c, "category": k, "created_at": day + pd.Timedelta(days=d),
                          "escalated": e} for t, c, k, d, e in rows])


def test_marks_repeat_contacts_and_topics():
    marked = mark_repeat_contacts(tickets().sample(frac=1, random_state=0), 7).set_index("ticket_id")
    assert marked.loc[["T2", "T5", "T8"], "repeat_contact"].all()
    assert not marked.loc[["T1", "T3", "T4", "T6", "T7"], "repeat_contact"].any()
    assert marked.loc[["T2", "T8"], "repeat_topic"].all()
    assert not marked.loc["T5", "repeat_topic"], "another topic is a repeat contact, not a repeat issue"
    assert mark_repeat_contacts(tickets(), 30).set_index("ticket_id").loc["T3", "repeat_topic"]


def test_summary_looks_back_before_the_window():
    summary = summarize_repeat_issues(tickets(), 7, window_from=pd.Timestamp("2025-03-01", tz="UTC"))
    assert summary["tickets"] == 7 and summary["repeat_contacts"] == 3 and summary["repeat_topic_contacts"] == 2
    customers = {(r["customer_id"], r["category"]): r for r in summary["customers"]}
    assert set(customers) == {("C1", "billing"), ("C3", "billing")}
    assert customers[("C1", "billing")]["repeats"] == 1 and customers[("C1", "billing")]["tickets"] == 3
    topics = {r["topic"]: r for r in summary["topics"]}
    assert topics["billing"]["repeats"] == 2 and topics["billing"]["tickets"] == 6
    assert topics["billing"]["escalation_rate_repeat"] == pytest.approx(1.0)
    assert topics["billing"]["escalation_rate_first"] == pytest.approx(0.0)
    assert topics["technical"]["repeats"] == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="within_days"):
        mark_repeat_contacts(tickets(), 0)
    with pytest.raises(KeyError, match="customer_id"):
        mark_repeat_contacts(tickets().drop(columns="customer_id"), 7)
