"""The case-mix model: expected risk from what arrived, never from who handled it; the training
distribution kept as data for drift; both in the bundle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bundle.case_mix import CASE_MIX_DATA, load_case_mix_model
from bundle.health import REFERENCE
from features.snapshots import LABEL, POSITION
from training.packaging import write_bundle


def test_case_mix_model_never_sees_the_agent_or_team(small_result):
    case_mix = small_result.case_mix
    assert case_mix is not None
    names = case_mix.features
    assert not [n for n in names if n.startswith(("agent_", "group_")) or n in ("group", "agent_messages")]
    assert {"category", "customer_tier", "customer_tickets_30d", "customer_escalation_rate"} <= set(names)
    assert case_mix.model.booster_.feature_name() == names


def test_expected_risk_does_not_move_when_the_agent_or_team_changes(small_result):
    """Invariance: the same tickets handed to other agents and teams get the same expected risk."""
    snaps = small_result.snapshots
    creations = snaps[(snaps["split"] == "test") & (snaps[POSITION] == 0)].head(300).reset_index(drop=True)
    swapped = creations.copy()
    rng = np.random.default_rng(0)
    swapped["agent_id"] = rng.permutation(swapped["agent_id"].to_numpy())
    swapped["group"] = rng.permutation(swapped["group"].to_numpy())
    builder, model = small_result.builder, small_result.case_mix
    before = model.model.predict_proba(builder.transform(creations)[model.features])[:, 1]
    after = model.model.predict_proba(builder.transform(swapped)[model.features])[:, 1]
    assert (builder.transform(creations)["agent_escalation_rate"] !=
            builder.transform(swapped)["agent_escalation_rate"]).any(), "the swap must change the agent features"
    np.testing.assert_array_equal(before, after)


def test_test_period_tickets_and_quality(small_result):
    snaps = small_result.snapshots
    creations = snaps[(snaps["split"] == "test") & (snaps[POSITION] == 0)]
    tickets = small_result.case_mix.tickets
    assert len(tickets) == len(creations) == tickets["ticket_id"].nunique()
    assert tickets["escalated"].tolist() == creations[LABEL].tolist()
    assert tickets["agent_id"].tolist() == creations["agent_id"].astype(str).tolist()
    assert tickets["expected"].between(0, 1).all() and tickets["expected"].min() > 0, "sigmoid: never exactly 0"
    metrics = small_result.metrics
    assert metrics["case_mix_test_roc_auc"] > 0.6, "the case mix must rank tickets better than chance"
    assert abs(tickets["expected"].mean() - tickets["escalated"].mean()) < 0.05


def test_bundle_carries_the_case_mix_model_and_the_reference_as_data(small_result, tmp_path):
    bundle_dir = write_bundle(small_result, tmp_path, "v-case-mix")
    metadata = json.loads((bundle_dir / "metadata.json").read_text())
    model = load_case_mix_model(bundle_dir, metadata)
    stored = pd.read_parquet(bundle_dir / CASE_MIX_DATA)
    snaps = small_result.snapshots
    creations = snaps[(snaps["split"] == "test") & (snaps[POSITION] == 0)]
    np.testing.assert_allclose(model.predict(small_result.builder.transform(creations)), stored["expected"], rtol=1e-6)
    reference = json.loads((bundle_dir / REFERENCE).read_text())
    assert set(reference["features"]) == set(metadata["features"])
    assert reference["features"]["category"]["kind"] == "categorical"
    assert reference["score"]["rows"] == (snaps["split"] == "valid").sum()
    for name, entry in reference["features"].items():
        assert sum(entry["shares"]) + entry["missing"] == pytest.approx(1.0), name
    raw = (bundle_dir / REFERENCE).read_bytes()
    assert raw.lstrip().startswith(b"{"), "plain JSON, never a pickle"
