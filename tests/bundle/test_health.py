"""Model health: drift (PSI) against the training distribution, quality from outcomes, retrain flag."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bundle.health import (
    DEFAULTS,
    compute_psi,
    describe_reference,
    population_stability_index,
    read_thresholds,
    recommend_retrain,
    summarize_alerts,
    summarize_bands,
    summarize_drift,
    summarize_verdicts,
    summarize_windows,
)


def make_features(n: int, seed: int, shift: float = 0.0, new_channel_share: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["email", "phone", "chat"], n, p=[0.5, 0.3, 0.2]).astype(object)
    channel[rng.random(n) < new_channel_share] = "whatsapp"
    age = rng.exponential(20, n) * (1 + shift)
    age[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "age_hours": age,
        "customer_messages": rng.poisson(1.0 + shift, n).astype(float),
        "channel": pd.Categorical(channel),
        "stable": rng.normal(0, 1, n),
    })


@pytest.fixture(scope="module")
def reference() -> dict:
    features = make_features(20_000, 0)
    score = np.random.default_rng(1).beta(1, 8, 20_000)
    return describe_reference(features, score, bins=10)


def test_reference_is_plain_json_with_shares_summing_to_one(reference):
    again = json.loads(json.dumps(reference))
    assert again == reference
    for name, entry in reference["features"].items():
        assert sum(entry["shares"]) + entry["missing"] == pytest.approx(1.0), name
    assert reference["features"]["channel"]["kind"] == "categorical"
    assert reference["features"]["age_hours"]["missing"] == pytest.approx(0.05, abs=0.01)
    assert len(reference["score"]["edges"]) == 9


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift(reference):
    same = make_features(5_000, 7)
    shifted = make_features(5_000, 7, shift=1.0, new_channel_share=0.3)
    for name in ("age_hours", "customer_messages", "channel", "stable"):
        assert compute_psi(reference["features"][name], same[name]) < 0.02, name
    assert compute_psi(reference["features"]["age_hours"], shifted["age_hours"]) > 0.25
    assert compute_psi(reference["features"]["channel"], shifted["channel"]) > 0.25, "an unseen level is drift"
    assert compute_psi(reference["features"]["stable"], shifted["stable"]) < 0.02


def test_psi_formula():
    # (0.6-0.5) ln(0.6/0.5) + (0.4-0.5) ln(0.4/0.5)
    assert population_stability_index([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2) - 0.1 * np.log(0.8))
    assert population_stability_index([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_drift_summary_names_the_top_drifting_features_and_needs_enough_rows(reference):
    shifted = make_features(5_000, 3, shift=1.0, new_channel_share=0.3)
    score = np.random.default_rng(2).beta(2, 5, 5_000)  # much riskier than the reference
    drift = summarize_drift(reference, shifted, score, DEFAULTS)
    assert drift["judged"] and drift["score"]["level"] == "drifted"
    assert {r["feature"] for r in drift["features"][:3]} == {"age_hours", "channel", "customer_messages"}
    psis = [r["psi"] for r in drift["features"]]
    assert psis == sorted(psis, reverse=True)
    assert drift["features"][-1]["feature"] == "stable" and drift["features"][-1]["level"] == "stable"
    few = summarize_drift(reference, shifted.head(100), score[:100], DEFAULTS)
    assert not few["judged"] and few["score"]["psi"] is None and few["features"][0]["level"] == "not judged"


def make_outcomes(n: int, seed: int, informative: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 6, n)
    y = (rng.random(n) < (p if informative else p.mean())).astype(int)
    end = pd.Timestamp("2026-03-01", tz="UTC")
    return pd.DataFrame({"scored_at": end - pd.to_timedelta(rng.random(n) * 21, unit="D"), "probability": p,
                         "escalates": y, "band": np.where(p > 0.4, "high", np.where(p > 0.2, "medium", "low"))})


def test_windows_measure_auc_and_calibration_and_skip_thin_windows():
    outcomes = make_outcomes(3_000, 0)
    windows = summarize_windows(outcomes, pd.Timestamp("2026-03-01", tz="UTC"), 7, 4, min_outcomes=200)
    assert [w["judged"] for w in windows] == [True, True, True, False]
    assert windows[3]["outcomes"] == 0
    assert sum(w["outcomes"] for w in windows) == 3_000
    for window in windows[:3]:
        assert 0.65 < window["roc_auc"] < 0.9 and window["ece"] < 0.05
    noise = summarize_windows(make_outcomes(3_000, 0, informative=False), pd.Timestamp("2026-03-01", tz="UTC"), 7, 1)
    assert abs(noise[0]["roc_auc"] - 0.5) < 0.06


def test_bands_realised_rates():
    outcomes = make_outcomes(3_000, 1)
    rows = {r["band"]: r for r in summarize_bands(outcomes, {"high": 0.5})}
    assert rows["high"]["realised_rate"] > rows["medium"]["realised_rate"] > rows["low"]["realised_rate"]
    assert rows["high"]["test_period_rate"] == 0.5 and rows["low"]["test_period_rate"] is None
    assert sum(r["outcomes"] for r in rows.values()) == 3_000


def test_retrain_is_recommended_on_drift_or_calibration_and_says_why(reference):
    thresholds = DEFAULTS | {"drifting_features_for_retrain": 2}
    calm = summarize_drift(reference, make_features(5_000, 4), np.random.default_rng(1).beta(1, 8, 5_000), thresholds)
    windows = summarize_windows(make_outcomes(3_000, 0), pd.Timestamp("2026-03-01", tz="UTC"), 7, 2)
    assert recommend_retrain(calm, windows, 0.8, thresholds) == {"recommended": False, "reasons": []}
    drifted = summarize_drift(reference, make_features(5_000, 4, shift=1.0, new_channel_share=0.3),
                              np.random.default_rng(1).beta(1, 8, 5_000), thresholds)
    verdict = recommend_retrain(drifted, windows, 0.8, thresholds)
    assert verdict["recommended"] and "features drifted" in verdict["reasons"][0]
    miscalibrated = make_outcomes(3_000, 0).assign(probability=lambda f: np.clip(f["probability"] * 2.5, 0, 1))
    bad = summarize_windows(miscalibrated, pd.Timestamp("2026-03-01", tz="UTC"), 7, 2)
    verdict = recommend_retrain(calm, bad, 0.8, thresholds)
    assert verdict["recommended"] and any("calibration error" in r for r in verdict["reasons"])
    assert any("ROC-AUC" in r for r in recommend_retrain(calm, windows, 0.95, thresholds)["reasons"])


def test_thresholds_come_from_the_bundle_params():
    assert read_thresholds({}) == DEFAULTS
    custom = read_thresholds({"params": {"monitoring.psi_retrain": 0.3, "monitoring.windows": 2}})
    assert custom["psi_retrain"] == 0.3 and custom["windows"] == 2 and custom["ece_retrain"] == DEFAULTS["ece_retrain"]


def test_alert_precision_and_lead_time():
    t = pd.Timestamp("2026-01-01", tz="UTC")
    alerts = pd.DataFrame({
        "raised_at": [t, t, t, t],
        "outcome": ["escalated", "escalated", "closed_without_escalation", None],
        "escalated_at": [t + pd.Timedelta(hours=2), t + pd.Timedelta(hours=10), pd.NaT, pd.NaT],
    })
    summary = summarize_alerts(alerts)
    assert summary["raised"] == 4 and summary["closed"] == 3 and summary["escalated"] == 2
    assert summary["precision"] == pytest.approx(2 / 3) and summary["lead_hours_median"] == pytest.approx(6)
    empty = summarize_alerts(alerts.iloc[0:0])
    assert empty["precision"] is None and empty["lead_hours_median"] is None


def test_verdicts_against_outcomes():
    verdicts = pd.DataFrame({"verdict": ["agree", "agree", "agree", "disagree", "disagree"],
                             "outcome": ["escalated", "escalated", None, "not_escalated", "escalated"]})
    rows = {r["verdict"]: r for r in summarize_verdicts(verdicts)}
    assert rows["agree"] == {"verdict": "agree", "given": 3, "outcome_known": 2, "escalated": 2, "not_escalated": 0,
                             "escalated_share": 1.0}
    assert rows["disagree"]["escalated_share"] == 0.5
