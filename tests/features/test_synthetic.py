"""The demo event log must follow the canonical contract and carry learnable, leak-free signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.schema import CANONICAL_COLUMNS, COUNTER_COLUMNS, PRIORITY_ORDER, validate_events
from features.synthetic import (
    ESCALATION_TYPES,
    SPECIALIST_TEAMS,
    _simulate_with_truth,
    generate_event_log,
    simulate_events,
)

N = 2000
TIME_COLUMNS = ("event_time", "created_at", "sla_due_at")
INT_COLUMNS = (*COUNTER_COLUMNS, "escalation_level")
CUE_PATTERNS = {
    "anger": r"unacceptable|absolutely furious|worst service",
    "repeat": r"third time|already contacted|explained this twice|last ticket",
    "supervisor": r"supervisor|manager",
    "legal": r"lawyer|ombudsman|regulator",
}


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _simulate_with_truth(N, seed=42)


@pytest.fixture(scope="module")
def events(simulated) -> pd.DataFrame:
    return simulated[0]


@pytest.fixture(scope="module")
def truth(simulated) -> pd.DataFrame:
    return simulated[1].set_index("ticket_id")


@pytest.fixture(scope="module")
def last_rows(events) -> pd.DataFrame:
    return events.groupby("ticket_id", sort=False).tail(1).set_index("ticket_id")


@pytest.fixture(scope="module")
def escalated_tickets(last_rows) -> pd.Series:
    return last_rows["escalation_level"] > 0


def _position(events: pd.DataFrame) -> pd.Series:
    """0 for the created row, 1 for the first update after creation, ..."""
    return events.groupby("ticket_id", sort=False).cumcount()


def test_columns_and_dtypes_match_the_canonical_contract(events):
    assert tuple(events.columns) == CANONICAL_COLUMNS
    for column in TIME_COLUMNS:
        assert str(events[column].dtype) == "datetime64[ns, UTC]", column
        assert events[column].notna().all(), column
    for column in INT_COLUMNS:
        assert events[column].dtype == np.int64, column
    for column in set(CANONICAL_COLUMNS) - set(TIME_COLUMNS) - set(INT_COLUMNS):
        assert pd.api.types.is_string_dtype(events[column].dtype), column
    nullable = {"last_customer_message", "escalation_type"}
    for column in set(CANONICAL_COLUMNS) - nullable:
        assert events[column].notna().all(), column
    assert events["ticket_id"].nunique() == N
    assert events["ticket_id"].str.fullmatch(r"T\d{8}").all()
    assert events["agent_id"].str.fullmatch(r"A\d{4}").all()


def test_vocabularies(events):
    assert set(events["priority"]) <= set(PRIORITY_ORDER)
    assert set(events["channel"]) == {"phone", "chat", "email", "web", "social"}
    assert set(events["customer_tier"]) == {"standard", "gold", "vip"}
    assert set(events["status"]) <= {"new", "open", "pending", "on_hold", "resolved", "closed"}
    assert set(events["event_type"]) == {
        "created",
        "agent_reply",
        "customer_reply",
        "hold",
        "transfer",
        "reassigned",
        "priority_changed",
        "escalated",
        "resolved",
        "reopened",
        "closed",
    }
    subs = events.groupby("category")["subcategory"].nunique()
    assert {"billing", "technical", "account", "delivery", "cancellation", "complaints"} <= set(subs.index)
    assert subs.between(3, 5).all()
    tiers = events.drop_duplicates("customer_id")["customer_tier"].value_counts(normalize=True)
    assert 0.7 < tiers["standard"] < 0.9 and tiers["vip"] < 0.1


def test_validator_accepts_every_row(events):
    result = validate_events(events)
    assert len(result.rejects) == 0
    assert len(result.events) == len(events)


def test_same_seed_gives_identical_data_and_another_seed_differs(events):
    again = simulate_events(N, seed=42)
    pd.testing.assert_frame_equal(events, again)
    other = simulate_events(N, seed=43)
    assert not events[["event_time", "category"]].equals(other[["event_time", "category"]])


def test_counters_and_level_never_decrease_within_a_ticket(events):
    for column in INT_COLUMNS:
        steps = events.groupby("ticket_id", sort=False)[column].diff().dropna()
        assert (steps >= 0).all(), column


def test_event_times_increase_and_start_at_creation(events):
    pos = _position(events)
    first = events[pos == 0]
    assert (first["event_time"] == first["created_at"]).all()
    assert (first["event_type"] == "created").all()
    assert (events["event_time"] >= events["created_at"]).all()
    steps = events.groupby("ticket_id", sort=False)["event_time"].diff().dropna()
    assert (steps > pd.Timedelta(0)).all()
    assert events["ticket_id"].is_monotonic_increasing


def test_created_rows_only_know_the_opening_message(events):
    created = events[events["event_type"] == "created"]
    assert created["last_customer_message"].isna().all()
    assert (created["customer_messages"] == 1).all()
    assert (created["agent_messages"] == 0).all()
    assert (created["escalation_level"] == 0).all()
    replies = events[events["event_type"] == "customer_reply"]
    assert replies["last_customer_message"].notna().all()


def test_rows_per_ticket_and_endings(events, last_rows):
    sizes = events.groupby("ticket_id").size()
    assert 5.0 <= sizes.mean() <= 9.0
    assert sizes.quantile(0.1) >= 3
    closed = last_rows["status"] == "closed"
    assert closed.mean() > 0.9
    assert (last_rows.loc[closed, "event_type"] == "closed").all()
    still_open = last_rows[~closed]
    assert len(still_open) > 0
    # Tickets still open at the end of the data are the recent ones.
    assert still_open["created_at"].min() > events["created_at"].quantile(0.9)


def test_escalation_rate_is_realistic(escalated_tickets):
    assert 0.08 <= escalated_tickets.mean() <= 0.15


def test_most_escalations_come_after_several_updates(events):
    pos = _position(events)
    escalation_pos = pos[events["event_type"] == "escalated"]
    assert (escalation_pos == 1).mean() < 1 / 3
    assert escalation_pos.median() >= 3


def test_each_escalation_type_occurs_and_a_few_tickets_escalate_twice(events, last_rows, escalated_tickets):
    types = events.loc[events["event_type"] == "escalated", "escalation_type"]
    assert set(types) == set(ESCALATION_TYPES)
    assert types.value_counts(normalize=True).min() > 0.05
    twice = (last_rows["escalation_level"] >= 2).sum()
    assert 0 < twice < 0.2 * escalated_tickets.sum()


def test_level_rises_exactly_on_escalated_rows(events):
    rise = events.groupby("ticket_id", sort=False)["escalation_level"].diff().fillna(0)
    is_escalated = events["event_type"] == "escalated"
    assert (rise[is_escalated] == 1).all()
    assert (rise[~is_escalated] == 0).all()


def test_escalation_type_is_null_before_and_set_after_the_first_escalation(events):
    assert events.loc[events["escalation_level"] == 0, "escalation_type"].isna().all()
    assert events.loc[events["escalation_level"] > 0, "escalation_type"].notna().all()
    escalated = events[events["event_type"] == "escalated"]
    assert set(escalated["escalation_type"]) <= set(ESCALATION_TYPES)


def test_escalation_types_behave_as_documented(events):
    escalated = events[events["event_type"] == "escalated"]
    previous_type = events.groupby("ticket_id", sort=False)["event_type"].shift(1)
    previous_group = events.groupby("ticket_id", sort=False)["group"].shift(1)

    time_based = escalated[escalated["escalation_type"] == "time_based"]
    assert (time_based["event_time"] > time_based["sla_due_at"]).all()

    customer = escalated[escalated["escalation_type"] == "customer_initiated"]
    assert (previous_type[customer.index] == "customer_reply").mean() > 0.8
    assert customer["last_customer_message"].str.contains("supervisor|manager").mean() > 0.8

    hierarchical = escalated[escalated["escalation_type"] == "hierarchical"]
    assert (hierarchical["group"] == "supervisors").mean() > 0.8

    functional = escalated[escalated["escalation_type"] == "functional"]
    assert functional["group"].isin(SPECIALIST_TEAMS).all()
    assert (functional["group"] != previous_group[functional.index]).all()

    priority = escalated[escalated["escalation_type"] == "priority"]
    assert priority["priority"].isin(["high", "urgent"]).all()
    assert (_position(events)[priority.index] <= 3).mean() > 0.5


def test_final_priority_is_closer_to_the_truth_than_the_creation_priority(events, truth, last_rows):
    created = events[events["event_type"] == "created"].set_index("ticket_id")["priority"]
    assert (created == truth["creation_priority"].reindex(created.index)).all()
    true = truth["true_priority"].reindex(last_rows.index)
    at_creation = (created.reindex(last_rows.index) == true).mean()
    final = (last_rows["priority"] == true).mean()
    assert 0.55 <= at_creation <= 0.75
    assert final > at_creation + 0.05
    rank = {p: i for i, p in enumerate(PRIORITY_ORDER)}
    error_before = (created.reindex(last_rows.index).map(rank) - true.map(rank)).abs().mean()
    error_after = (last_rows["priority"].map(rank) - true.map(rank)).abs().mean()
    assert error_after < error_before
    assert (events["event_type"] == "priority_changed").any()


def test_latent_truth_never_reaches_the_log(events, truth):
    assert set(truth.columns).isdisjoint(events.columns)
    assert len(events.columns) == len(CANONICAL_COLUMNS)


def test_cue_phrases_are_informative_but_noisy(events, escalated_tickets):
    text = (
        (events["description"] + " " + events["last_customer_message"].fillna(""))
        .groupby(events["ticket_id"])
        .agg(" ".join)
    )
    escalated = escalated_tickets.reindex(text.index)
    for name, pattern in CUE_PATTERNS.items():
        has_cue = text.str.contains(pattern)
        in_escalated = has_cue[escalated].mean()
        in_others = has_cue[~escalated].mean()
        assert in_escalated > in_others, name
        assert has_cue[~escalated].sum() > 0, f"{name} cue never appears without an escalation"
    any_cue = text.str.contains("|".join(CUE_PATTERNS.values()))
    assert any_cue[escalated].mean() < 0.9, "escalations must not all be announced by a cue"


def test_repeat_contacts_and_new_agents_escalate_more(events, truth, escalated_tickets):
    first = events[events["event_type"] == "created"].set_index("ticket_id").sort_values("created_at")
    previous = first.groupby("customer_id")["created_at"].shift(1)
    repeat = (first["created_at"] - previous) < pd.Timedelta(days=30)
    escalated = escalated_tickets.reindex(first.index)
    assert escalated[repeat].mean() > escalated[~repeat].mean()
    assert first["customer_id"].value_counts().max() >= 5  # heavy-tailed contact frequency
    followup = truth["is_followup"].reindex(escalated.index)
    assert escalated[followup].mean() > escalated[~followup].mean()
    new_agent = truth["agent_tenure_months"].reindex(escalated.index) < 3
    assert escalated[new_agent].mean() > escalated[~new_agent].mean()


def test_categories_and_tiers_have_different_escalation_rates(events, escalated_tickets):
    first = events[events["event_type"] == "created"].set_index("ticket_id")
    by_category = escalated_tickets.groupby(first["category"]).mean()
    assert by_category["complaints"] > by_category["account"]
    by_tier = escalated_tickets.groupby(first["customer_tier"]).mean()
    assert by_tier["vip"] > by_tier["standard"]


def test_weekday_volume_above_weekend_volume(events):
    created = events.loc[events["event_type"] == "created", "created_at"]
    weekday = created.dt.day_of_week
    assert (weekday < 5).sum() / 5 > 1.5 * (weekday >= 5).sum() / 2
    business = created.dt.hour.between(9, 16)
    assert business.mean() > 0.5


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_generate_event_log_in_chunks(tmp_path: Path, fmt: str):
    path = tmp_path / f"events.{fmt}"
    summary = generate_event_log(path, n_tickets=900, seed=3, fmt=fmt, chunk_tickets=300)
    frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    assert summary["tickets"] == 900 == frame["ticket_id"].nunique()
    assert summary["rows"] == len(frame)
    assert summary["path"] == str(path)
    assert 0.0 < summary["escalation_rate"] < 0.3
    assert summary["seconds"] >= 0
    if fmt == "parquet":
        assert pq.ParquetFile(path).metadata.num_row_groups == 3
    else:
        times = pd.to_datetime(frame["event_time"], utc=True)
        assert times.notna().all()


def test_generate_event_log_is_byte_identical_for_the_same_arguments(tmp_path: Path):
    digests = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.parquet"
        generate_event_log(path, n_tickets=400, seed=9, chunk_tickets=150)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_generate_event_log_rejects_an_unknown_format(tmp_path: Path):
    with pytest.raises(ValueError, match="fmt"):
        generate_event_log(tmp_path / "x.json", n_tickets=10, fmt="json")
