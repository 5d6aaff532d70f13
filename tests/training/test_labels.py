"""Several labels in one run and one bundle: the params, training, the bundle and its scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bundle.model import BundleError, load_bundle, write_manifest
from features.labels import label_column
from features.schema import CANONICAL_COLUMNS
from training.batch_score import score_frame
from training.config import Params, ParamsError, load_params
from training.packaging import write_bundle
from training.registry import to_wire_format
from training.train import train_models

TRAINING = Path(__file__).resolve().parents[2] / "training"
TYPES = ["hierarchical", "functional", "time_based", "priority", "customer_initiated"]


@pytest.fixture(scope="module")
def single_result(small_events_path, params):
    """The primary label trained alone, as before labels were a list."""
    return train_models(small_events_path, params.select_label("any"))


@pytest.fixture(scope="module")
def labels_bundle(small_result, tmp_path_factory):
    return load_bundle(write_bundle(small_result, tmp_path_factory.mktemp("labels"), "v-labels"))


def _wire(result, n: int = 60):
    test = result.snapshots[result.snapshots["split"] == "test"].head(n)
    return to_wire_format(test[list(CANONICAL_COLUMNS)])


def test_the_demo_params_train_any_plus_each_type_the_data_has(small_result):
    names = [label.name for label in small_result.labels]
    assert names[0] == "any" and small_result.params.label.name == "any"
    assert set(names[1:]) | set(small_result.skipped_labels) == set(TYPES)
    assert len(names) >= 4, f"most types should have enough escalations even in 3,000 tickets: {names}"
    for label in small_result.labels:
        for key in ("test_roc_auc", "baseline_logistic_roc_auc", "test_ece", "test_base_rate"):
            assert np.isfinite(small_result.metrics[f"label.{label.name}.{key}"]), (label.name, key)


def test_typed_labels_split_the_primary_labels_positives(small_result):
    snaps = small_result.snapshots
    typed = sum(snaps[label_column(t)].clip(lower=0) for t in TYPES if label_column(t) in snaps)
    np.testing.assert_array_equal(typed, snaps["escalates"])


def test_the_primary_model_is_the_one_trained_alone(small_result, single_result):
    """Other labels change nothing about the primary's rows, features, model or metrics."""
    assert small_result.labels[0].features == single_result.escalation_model.booster_.feature_name()
    assert small_result.escalation_model.booster_.model_to_string() == \
        single_result.escalation_model.booster_.model_to_string()
    primary = {k: v for k, v in small_result.metrics.items() if not k.startswith("label.")}
    alone = {k: v for k, v in single_result.metrics.items() if not k.startswith("label.")}
    assert primary == alone


def test_each_typed_model_reads_its_own_outcome_rates(small_result):
    for label in small_result.labels[1:]:
        assert f"group_escalation_rate__{label.name}" in label.features
        assert "group_escalation_rate" not in label.features
        assert not any(f.endswith("__" + other.name) for other in small_result.labels if other is not label
                       for f in label.features)
    assert not any("__" in f for f in small_result.labels[0].features)
    assert small_result.priority_features is not None and not any("__" in f for f in small_result.priority_features)


def test_the_bundle_scores_every_label_like_training(small_result, labels_bundle):
    assert [label.name for label in labels_bundle.labels] == [label.name for label in small_result.labels]
    test = small_result.snapshots[small_result.snapshots["split"] == "test"]
    scored = labels_bundle.score(_wire(small_result, len(test)))
    for label in small_result.labels:
        asked = (test[label_column(label.name)] >= 0).to_numpy()
        np.testing.assert_allclose(scored[f"escalation_probability__{label.name}"].to_numpy()[asked],
                                   label.test_scores["probability"].to_numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(scored["escalation_probability"], scored["escalation_probability__any"])
    typed = scored[[f"escalation_probability__{label.name}" for label in labels_bundle.labels[1:]]].to_numpy()
    kinds = np.array([label.escalation_type for label in labels_bundle.labels[1:]])
    assert scored["likely_type"].tolist() == kinds[typed.argmax(axis=1)].tolist()


def test_batch_scoring_writes_each_labels_columns(small_result, labels_bundle):
    events = small_result.snapshots[small_result.snapshots["split"] == "test"].head(300)
    scored = score_frame(events[list(CANONICAL_COLUMNS)], labels_bundle)
    for label in labels_bundle.labels:
        assert scored[f"escalation_probability__{label.name}"].between(0, 1).all()
        assert set(scored[f"band__{label.name}"]) <= {"high", "medium", "low"}
    assert set(scored["likely_type"]) <= set(TYPES)


def test_a_one_label_bundle_of_before_labels_were_a_list_still_loads_and_scores(single_result, tmp_path):
    bundle_dir = write_bundle(single_result, tmp_path, "v-old")
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    for key in ("labels", "skipped_labels"):
        meta.pop(key)
    (bundle_dir / "metadata.json").write_text(json.dumps(meta))
    write_manifest(bundle_dir)
    bundle = load_bundle(bundle_dir)
    assert [label.name for label in bundle.labels] == ["escalation"]
    scored = bundle.score(_wire(single_result))
    expected = single_result.test_scores.head(60)["probability"].to_numpy()
    np.testing.assert_allclose(scored["escalation_probability"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    assert "likely_type" not in scored, "one label: the columns of before"


def test_a_bundle_whose_metadata_points_a_label_elsewhere_is_refused(small_result, tmp_path):
    bundle_dir = write_bundle(small_result, tmp_path, "v-bad")
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    meta["labels"][1]["model_file"] = "../../elsewhere.txt"
    (bundle_dir / "metadata.json").write_text(json.dumps(meta))
    write_manifest(bundle_dir)
    with pytest.raises(BundleError, match="names model file"):
        load_bundle(bundle_dir)


def test_label_params_are_checked_with_the_fields_named(tmp_path):
    base = load_params(TRAINING / "params.yaml").model_dump(exclude={"label", "primary_label"})
    cases = {
        "duplicate label name": {"labels": [{"name": "a"}, {"name": "a"}]},
        "primary_label 'b' is not one of the labels": {"labels": [{"name": "a"}], "primary_label": "b"},
        "rise_type applies to the level_rise rule only": {"labels": [{"name": "a", "rule": "counter_rise",
                                                                      "rise_type": "functional"}]},
        "labels.0.name": {"labels": [{"name": "Bad Name"}]},
        "either `label`": {"labels": [{"name": "a"}], "label": {"name": "b"}},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            Params.model_validate({**base, **change})
    path = tmp_path / "params.yaml"
    path.write_text("escalation_model: {objective: binary}\npriority_model: {objective: multiclass}\n"
                    "labels: [{name: a, rule: sla_late}]\n")
    with pytest.raises(ParamsError, match="labels.0.rule"):
        load_params(path)


def test_servicenow_trains_both_labels_with_the_settings_each_has_alone():
    both = load_params(TRAINING / "params_servicenow.yaml")
    assert [label.name for label in both.list_labels()] == ["functional", "sla"]
    sla_alone = load_params(TRAINING / "params_servicenow_sla.yaml").model_dump()
    sla = both.select_label("sla").model_dump()
    for section in ("escalation_model", "priority_model", "split", "snapshots", "text", "history", "label"):
        assert sla[section] == sla_alone[section], section
    assert set(sla["features"]["exclude"]) == set(sla_alone["features"]["exclude"])
    assert both.label.escalation_type == "functional" and both.labels[1].escalation_type == "time_based"


def test_an_export_with_one_kind_of_escalation_gets_that_kind_on_its_one_model(tmp_path, params):
    """A mapped export whose rule writes one escalation type: the typed label repeats the any-rise
    label (not trained twice; the any-rise model carries the type); absent types are skipped."""
    from features.synthetic import generate_event_log

    path = tmp_path / "events.parquet"
    generate_event_log(path, n_tickets=800, seed=3)
    events = pd.read_parquet(path)
    events["escalation_type"] = events["escalation_type"].where(events["escalation_type"].isna(), "hierarchical")
    events.to_parquet(path)
    data = params.model_dump(exclude={"label"})
    data["labels"] = [label for label in data["labels"] if label["name"] in ("any", "hierarchical", "functional")]
    data["text"]["enabled"] = False  # and so no constraint on a text feature
    for key in ("monotone_increasing", "monotone_decreasing"):
        data["escalation_model"][key] = [f for f in data["escalation_model"][key]
                                         if not f.startswith(("cue_", "last_message_cue_", "sentiment_"))]
    result = train_models(path, Params.model_validate(data))
    assert [label.name for label in result.labels] == ["any"]
    assert result.labels[0].escalation_type == "hierarchical"
    assert "the same values as label any" in result.skipped_labels["hierarchical"]
    assert "positive training snapshots" in result.skipped_labels["functional"]
    bundle = load_bundle(write_bundle(result, tmp_path / "models", "v-one-kind"))
    assert bundle.primary.escalation_type == "hierarchical"
