"""Reasons: path contributions precomputed per leaf, the one-row LightGBM fast path, TreeSHAP on
request, and missing or unseen values shown readably."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.contributions import TreePaths
from bundle.fast_predict import PREDICT_LEAF_INDEX, SingleRowPredictor
from bundle.model import load_bundle
from bundle.online_score import score_many
from features.build import MISSING, UNSEEN
from features.online import OnlineFeatures
from serving.schemas import Ticket
from tests.serving.conftest import AUTH


@pytest.fixture(scope="module")
def bundle(serving_models_dir):
    return load_bundle(serving_models_dir / "current")


@pytest.fixture(scope="module")
def features(bundle, wire_tickets) -> np.ndarray:
    rows = [dict(Ticket.model_validate(t)) for t in wire_tickets]
    return OnlineFeatures(bundle.builder).transform_many(rows)[0]


@pytest.fixture(scope="module")
def primary_features(bundle, features) -> np.ndarray:
    """The primary escalation model's columns of the bundle's matrix (with several labels, not all)."""
    return bundle.primary.select(features)


@pytest.fixture(scope="module")
def priority_features(bundle, features) -> np.ndarray:
    return features if bundle.priority_columns is None else features[:, bundle.priority_columns]


def test_path_contributions_add_up_to_the_raw_score(bundle, primary_features):
    """bias + contributions == LightGBM's raw margin, and the score is LightGBM's predict()."""
    features = primary_features
    paths = TreePaths(bundle.escalation_model)
    score, contributions = paths.explain(features)
    margin = bundle.escalation_model.predict(features, raw_score=True)
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(score, bundle.escalation_model.predict(features), rtol=0, atol=1e-15)
    assert (np.abs(contributions[:, :-1]) > 0).sum(axis=1).min() >= 3, "every ticket has at least 3 reasons"


def test_path_contributions_of_one_stump_are_the_value_changes():
    """A one-split model credits the split feature with (leaf value - root value)."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 1] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 2, "min_data_in_leaf": 5, "verbose": -1,
                         "learning_rate": 1.0}, lgb.Dataset(x, y), num_boost_round=1)
    tree = booster.dump_model()["tree_info"][0]["tree_structure"]
    root, left, right = tree["internal_value"], tree["left_child"]["leaf_value"], tree["right_child"]["leaf_value"]
    _, contributions = TreePaths(booster).explain(np.array([[0.0, -2.0, 0.0], [0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(contributions, [[0, left - root, 0, root], [0, right - root, 0, root]], atol=1e-12)


def test_one_row_fast_path_equals_booster_predict(bundle, primary_features, priority_features):
    priority = SingleRowPredictor(bundle.priority_model)
    leaves = SingleRowPredictor(bundle.escalation_model, PREDICT_LEAF_INDEX)
    for row in priority_features[:40]:
        np.testing.assert_array_equal(priority.predict(row), bundle.priority_model.predict(row[None, :])[0])
    for row in primary_features[:40]:
        np.testing.assert_array_equal(leaves.predict(row), bundle.escalation_model.predict(row[None, :],
                                                                                          pred_leaf=True)[0])
    with pytest.raises(ValueError, match="expected one row"):
        priority.predict(priority_features[0][:5])


def test_one_row_fast_path_reads_the_models_columns_of_the_whole_row(bundle, features):
    """`predict(row, columns)` (a label's columns taken from the bundle's row) == predict of the selected row."""
    label = next((label for label in bundle.labels if label.columns is not None), None)
    if label is None:
        pytest.skip("every label of this bundle reads all columns")
    leaves = SingleRowPredictor(label.booster, PREDICT_LEAF_INDEX)
    for row in features[:40]:
        np.testing.assert_array_equal(leaves.predict(row, label.columns), leaves.predict(row[label.columns]))
    with pytest.raises(ValueError, match="expected one row"):
        leaves.predict(features[0], label.columns[:-1])


def test_every_label_at_once_equals_each_label_alone(bundle, features):
    """One ticket's labels scored together (StackedPaths) give each label's own scores, bit for bit."""
    assert len(bundle.labels) > 1, "the fixture bundle should train several labels"
    fields = ("raw", "probability", "band", "escalate_now", "contributions", "top")
    for row in features[:60]:
        together = bundle.score_labels_one(row, 3)
        for label in bundle.labels:
            alone = label.score(row[None, :], 3, "path")
            for name in fields:
                np.testing.assert_array_equal(getattr(together[label.name], name), getattr(alone, name),
                                              err_msg=f"{label.name}.{name}")


def test_scores_without_reasons_equal_the_path_sums_bit_for_bit(bundle, features):
    """reasons="none" takes LightGBM's predict(); the path sums (reasons="path") must give the same
    raw score, probability, band and escalate_now for every label, bit for bit, or the watcher's
    cheap pass and its explained pass could disagree about which side of the line a ticket is."""
    for label in bundle.labels:
        cheap, explained = label.score(features, 3, "none"), label.score(features, 3, "path")
        for name in ("raw", "probability", "band", "escalate_now"):
            np.testing.assert_array_equal(getattr(cheap, name), getattr(explained, name),
                                          err_msg=f"{label.name}.{name}")
        assert cheap.top.shape == (len(features), 0)


def test_shap_reasons_are_lightgbm_pred_contrib(bundle, features, primary_features, wire_tickets):
    """reasons="shap" names the top TreeSHAP features, on the fast path and in ModelBundle.score."""
    scored = bundle.score_features(features, reasons="shap")
    shap = bundle.escalation_model.predict(primary_features, pred_contrib=True)[:, :-1]
    np.testing.assert_array_equal(scored.contributions, shap)
    rows = [dict(Ticket.model_validate(t)) for t in wire_tickets[:30]]
    online = OnlineFeatures(bundle.builder)
    fast = score_many(bundle, online, rows, reasons="shap")
    reference = bundle.score(pd.DataFrame([Ticket.model_validate(t).model_dump(mode="json")
                                           for t in wire_tickets[:30]]), reasons="shap")
    assert [f["reasons"] for f in fast] == reference["reasons"].tolist()
    with pytest.raises(ValueError, match="unknown reasons method"):
        bundle.score_features(features, reasons="guess")


def test_missing_and_unseen_categories_read_as_text_never_null(bundle, wire_tickets):
    """Every feature as a reason: a missing value is "not set", an unseen category "other"."""
    ticket = dict(wire_tickets[0], channel=None, customer_tier=None, sla_due_at=None,
                  category="a category never seen in training")
    rows = [dict(Ticket.model_validate(ticket))]
    online = OnlineFeatures(bundle.builder)
    every = len(online.names)
    fast = {r["feature"]: r["value"] for r in score_many(bundle, online, rows, n_reasons=every)[0]["reasons"]}
    assert fast["channel"] == MISSING and fast["customer_tier"] == MISSING
    assert fast["hours_to_sla"] == MISSING
    assert fast["category"] == UNSEEN
    assert fast["priority"] == wire_tickets[0]["priority"].lower() or fast["priority"] in (MISSING, UNSEEN)
    assert None not in fast.values()
    reference = bundle.score(pd.DataFrame([Ticket.model_validate(ticket).model_dump(mode="json")]), n_reasons=every)
    assert {r["feature"]: r["value"] for r in reference["reasons"].iloc[0]} == fast


def test_response_reasons_never_carry_null(client, wire_tickets):
    tickets = [dict(t, channel=None, customer_tier=None, group=None, status=None) for t in wire_tickets[:50]]
    scores = client.post("/v1/score", json={"tickets": tickets}, headers=AUTH).get_json()["scores"]
    assert all(r["value"] is not None for s in scores for r in s["escalation"]["reasons"])
