"""Against case mix: observed / expected with exact Poisson intervals, flagged only when 1 is outside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.case_mix import (
    ABOVE,
    BELOW,
    compare_to_case_mix,
    fit_window_offset,
    poisson_interval,
    select_case_mix_features,
    standardize_to_window,
    summarize_case_mix,
)


def make_tickets(seed: int = 0, per_agent: int = 400) -> pd.DataFrame:
    """Agents with different case mixes; agent 'risky' escalates 2.5x its case mix, the rest at it.

    'hard' takes tickets four times as risky as the others and escalates exactly as expected."""
    rng = np.random.default_rng(seed)
    frames = []
    for agent, base, multiplier in [("hard", 0.32, 1.0), ("risky", 0.08, 2.5), *[(f"a{i}", 0.08, 1.0) for i in range(8)]]:
        expected = np.clip(rng.beta(2, 2 / base - 2, per_agent), 0.005, 0.9)
        escalated = rng.random(per_agent) < np.clip(expected * multiplier, 0, 1)
        frames.append(pd.DataFrame({"agent_id": agent, "expected": expected, "escalated": escalated.astype(int),
                                    "category": rng.choice(["billing", "technical"], per_agent)}))
    return pd.concat(frames, ignore_index=True)


def test_poisson_interval_matches_the_exact_table():
    # Exact 95 % limits for a Poisson count (Garwood; e.g. Breslow & Day vol. II, appendix): 0 -> (0, 3.689),
    # 1 -> (0.0253, 5.572), 10 -> (4.795, 18.39).
    low, high = poisson_interval(np.array([0, 1, 10]), 0.95)
    np.testing.assert_allclose(low, [0.0, 0.0253, 4.795], atol=2e-3)
    np.testing.assert_allclose(high, [3.689, 5.572, 18.39], atol=2e-2)
    wider_low, wider_high = poisson_interval(np.array([10]), 0.99)
    assert wider_low[0] < low[2] and wider_high[0] > high[2]


def test_flags_the_agent_beyond_its_case_mix_and_not_the_one_with_hard_tickets():
    tickets = make_tickets()
    table = compare_to_case_mix(tickets, "agent_id", 0.95).set_index("agent_id")
    assert table.loc["risky", "flag"] == ABOVE
    assert table.loc["risky", "ratio"] == pytest.approx(2.5, rel=0.25)
    # Raw rate four times the others', but as its case mix predicts: not flagged.
    raw = tickets.groupby("agent_id")["escalated"].mean()
    assert raw["hard"] > 2.5 * raw.drop(["hard", "risky"]).mean()
    assert table.loc["hard", "flag"] == ""
    assert table.loc["hard", "ci_low"] < 1 < table.loc["hard", "ci_high"]
    assert table.index[0] == "risky", "flagged-above rows come first"
    row = table.loc["risky"]
    assert row["observed"] == tickets.loc[tickets["agent_id"] == "risky", "escalated"].sum()
    assert row["expected"] == pytest.approx(tickets.loc[tickets["agent_id"] == "risky", "expected"].sum())
    assert row["excess"] == pytest.approx(row["observed"] - row["expected"])


def test_an_agent_far_below_its_case_mix_is_flagged_below():
    tickets = make_tickets()
    careful = tickets["agent_id"] == "a0"
    tickets.loc[careful, "escalated"] = 0
    table = compare_to_case_mix(tickets, "agent_id").set_index("agent_id")
    assert table.loc["a0", "flag"] == BELOW and table.loc["a0", "ratio"] == 0
    assert table.index[-1] == "a0"


def test_window_reference_makes_the_total_ratio_one_and_keeps_the_order():
    tickets = make_tickets()
    tickets["expected"] = tickets["expected"] * 0.6  # a model that under-predicts this window
    shifted, offset = standardize_to_window(tickets, "window")
    assert offset > 0
    assert shifted["expected"].sum() == pytest.approx(tickets["escalated"].sum(), rel=1e-8)
    assert (np.argsort(shifted["expected"].to_numpy()) == np.argsort(tickets["expected"].to_numpy())).all()
    same, zero = standardize_to_window(tickets, "model")
    assert zero == 0 and same["expected"].equals(tickets["expected"])
    # Under "model" every agent looks worse than expected; under "window" only the risky one is flagged.
    by_model = compare_to_case_mix(tickets, "agent_id")
    by_window = compare_to_case_mix(shifted, "agent_id")
    assert (by_model["flag"] == ABOVE).sum() > (by_window["flag"] == ABOVE).sum() == 1


def test_window_offset_cannot_be_fitted_without_escalations():
    assert fit_window_offset(np.array([0.1, 0.2]), np.array([0, 0])) == 0.0
    assert fit_window_offset(np.array([]), np.array([])) == 0.0


def test_summary_tables_and_row_limit():
    tickets = make_tickets()
    summary = summarize_case_mix(tickets, 0.95, "window", {"agent_id": "Agent", "category": "Category",
                                                           "customer_id": "Customer"}, max_rows=3)
    assert set(summary["tables"]) == {"agent_id", "category"}, "a dimension the tickets lack is left out"
    agents = summary["tables"]["agent_id"]
    assert agents["compared"] == 10 and len(agents["rows"]) == 3
    assert agents["rows"][0]["value"] == "risky" and agents["flagged_above"] == 1
    assert summary["observed"] == int(tickets["escalated"].sum())
    assert summary["expected"] == pytest.approx(summary["observed"])


def test_missing_columns_and_bad_confidence_are_named():
    with pytest.raises(KeyError, match="expected"):
        compare_to_case_mix(pd.DataFrame({"agent_id": ["a"], "escalated": [1]}), "agent_id")
    with pytest.raises(ValueError, match="confidence"):
        compare_to_case_mix(make_tickets(), "agent_id", confidence=1.5)
    with pytest.raises(ValueError, match="reference"):
        standardize_to_window(make_tickets(), "average")


def test_case_mix_features_leave_out_agent_and_team():
    names = ["channel", "group", "agent_escalation_rate", "agent_messages", "customer_tickets_7d",
             "group_open_tickets", "text_svd_0"]
    kept = select_case_mix_features(names, ["agent_", "group_"], ["group", "agent_messages"])
    assert kept == ["channel", "customer_tickets_7d", "text_svd_0"]


def test_rows_with_too_few_tickets_are_never_flagged():
    one_ticket = pd.DataFrame({"customer_id": ["C1", "C2"], "escalated": [1, 0], "expected": [0.001, 0.5]})
    assert compare_to_case_mix(one_ticket, "customer_id").set_index("customer_id").loc["C1", "flag"] == ABOVE
    table = compare_to_case_mix(one_ticket, "customer_id", min_tickets=20).set_index("customer_id")
    assert table.loc["C1", "flag"] == "" and table.loc["C1", "ratio"] == pytest.approx(1000)
