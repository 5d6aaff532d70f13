"""End-to-end training on small generated data: mechanics, honesty of the split, the bundle."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bundle.model import BundleError, load_bundle
from training.packaging import make_version, point_current, write_bundle
from training.train import (
    count_ticket_rows,
    multiply_weights,
    train_models,
    weigh_by_recency,
    weigh_by_ticket,
)


def test_split_is_time_ordered_and_tickets_do_not_straddle(small_result):
    snaps = small_result.snapshots
    created = snaps.groupby("split")["created_at"].agg(["min", "max"])
    assert created.loc["train", "max"] <= created.loc["valid", "min"]
    assert created.loc["valid", "max"] <= created.loc["test", "min"]
    assert snaps.groupby("ticket_id")["split"].nunique().max() == 1


def test_metrics_cover_ranking_calibration_capacity_position_and_priority(small_result):
    m = small_result.metrics
    for key in ["test_roc_auc", "test_pr_auc", "test_brier", "test_ece", "test_precision_at_5pct",
                "test_recall_at_20pct", "test_roc_auc_position_0", "test_roc_auc_position_3",
                "baseline_logistic_roc_auc", "baseline_priority_rule_roc_auc", "test_priority_macro_f1",
                "baseline_typed_priority_macro_f1", "test_priority_accuracy"]:
        assert key in m and np.isfinite(m[key]), key
    assert 0.5 < m["test_roc_auc"] <= 1
    assert small_result.confusion.to_numpy().sum() > 0


def test_bands_come_from_validation_and_follow_the_capacity_policy(small_result, params):
    t = small_result.thresholds
    assert t["high"] >= t["medium"]
    valid_share = small_result.metrics["test_band_high_share"]
    assert abs(valid_share - params.bands.high) < 0.05, "test share of the high band near the policy's 5 %"


def test_feature_builder_learns_from_the_training_period_only(small_result):
    train = small_result.snapshots[small_result.snapshots.split == "train"]
    for column, categories in small_result.builder.categories_.items():
        assert set(categories) <= set(train[column].dropna().astype(str)), column


def test_same_seed_and_data_give_identical_metrics(small_events_path, params, small_result):
    again = train_models(small_events_path, params)
    # assert_equal counts NaN as equal to NaN (a rare label's ROC-AUC at a position without positives)
    np.testing.assert_equal(again.metrics, small_result.metrics)


def test_bundle_roundtrip_scores_like_training(small_result, tmp_path):
    bundle_dir = write_bundle(small_result, tmp_path, make_version(small_result))
    bundle = load_bundle(bundle_dir)
    test_rows = small_result.snapshots[small_result.snapshots.split == "test"].head(200)
    scored = bundle.score(test_rows.drop(columns=["escalates", "priority_target", "escalates_at", "split"]))
    expected = small_result.test_scores.head(200)["probability"].to_numpy()
    np.testing.assert_allclose(scored["escalation_probability"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    assert scored["ticket_id"].tolist() == test_rows["ticket_id"].astype(str).tolist(), "input order kept"
    assert set(scored["band"]) <= {"high", "medium", "low"}
    first = scored["reasons"].iloc[0]
    assert len(first) == 3 and {"feature", "label", "value", "effect", "direction"} <= set(first[0])
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    assert meta["data_fingerprint"] == small_result.data_fingerprint
    assert set(meta["data_window"]) == {"train", "valid", "test"}


def test_models_are_saved_in_lightgbm_text_format(small_result, tmp_path):
    bundle_dir = write_bundle(small_result, tmp_path, "v1")
    assert (bundle_dir / "escalation_model.txt").read_text().startswith("tree")
    assert (bundle_dir / "priority_model.txt").read_text().startswith("tree")


@pytest.mark.parametrize("tamper", ["edit", "delete", "add"])
def test_tampered_bundle_is_refused(small_result, tmp_path, tamper):
    bundle_dir = write_bundle(small_result, tmp_path, "v1")
    if tamper == "edit":
        with open(bundle_dir / "escalation_model.txt", "a") as handle:
            handle.write("\n# changed\n")
    elif tamper == "delete":
        (bundle_dir / "history.parquet").unlink()
    else:
        (bundle_dir / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="failed verification"):
        load_bundle(bundle_dir)


def test_current_points_at_the_newest_champion(small_result, tmp_path):
    first = write_bundle(small_result, tmp_path, "v1")
    point_current(tmp_path, first)
    second = write_bundle(small_result, tmp_path, "v2")
    point_current(tmp_path, second)
    assert (tmp_path / "current").resolve() == second.resolve()
    assert load_bundle(tmp_path / "current").version == "v2"
    shutil.rmtree(first)


def test_scoring_rejects_bad_tickets_with_the_reason(small_result, tmp_path):
    bundle = load_bundle(write_bundle(small_result, tmp_path, "v1"))
    row = small_result.snapshots.head(1).copy()
    row["event_time"] = "yesterday-ish"
    with pytest.raises(ValueError, match="event_time: unparseable"):
        bundle.score(row)


def test_training_stops_on_too_many_rejects_and_keeps_them(small_events_path, params, tmp_path):
    events = pd.read_parquet(small_events_path)
    events["event_time"] = events["event_time"].astype(str)
    events.loc[events.index[::5], "event_time"] = "not a time"
    bad_path = tmp_path / "bad.parquet"
    events.to_parquet(bad_path)
    rejects_path = tmp_path / "rejects.csv"
    with pytest.raises(ValueError, match="rows were rejected"):
        train_models(bad_path, params, rejects_path)
    rejects = pd.read_csv(rejects_path)
    assert (rejects["reason"] == "unparseable or missing time").sum() >= len(events) // 5


def test_recency_weights_halve_per_half_life():
    created = pd.Series(pd.to_datetime(["2025-03-01", "2025-03-15", "2025-03-29"], utc=True))
    assert weigh_by_recency(created, None) is None
    assert weigh_by_recency(created, 14.0).tolist() == [0.25, 0.5, 1.0]


def test_ticket_weights_make_each_ticket_count_once():
    tickets = pd.Series(["a", "b", "a", "c", "a", "b"])
    assert weigh_by_ticket(count_ticket_rows(tickets), None) is None
    assert weigh_by_ticket(count_ticket_rows(tickets), "equal").tolist() == [1 / 3, 0.5, 1 / 3, 1.0, 1 / 3, 0.5]
    assert multiply_weights(None, None) is None
    assert multiply_weights(np.array([0.5, 1.0]), None, np.array([0.5, 0.25])).tolist() == [0.25, 0.25]
