"""The service scores exactly what the training code computes, on both the single and batch paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.model import load_bundle
from bundle.online_score import score_many
from features.online import OnlineFeatures
from features.schema import CANONICAL_COLUMNS
from features.synthetic import generate_event_log
from serving.schemas import Ticket
from tests.features.hostile_text import hostile_texts
from tests.serving.conftest import AUTH
from training.registry import to_wire_format


@pytest.fixture(scope="module")
def bundle(serving_models_dir):
    return load_bundle(serving_models_dir / "current")


@pytest.fixture(scope="module")
def generated_tickets(tmp_path_factory) -> list[dict]:
    """Every update of 400 tickets from another seed: new and known customers, agents and texts."""
    path = tmp_path_factory.mktemp("parity") / "events.parquet"
    generate_event_log(path, n_tickets=400, seed=2024)
    events = pd.read_parquet(path)
    rows = to_wire_format(events[[c for c in CANONICAL_COLUMNS if c in events]].head(1500)).to_dict(orient="records")
    return [Ticket.model_validate(r).model_dump(mode="json") for r in rows]


def test_online_features_equal_the_feature_builder(bundle, generated_tickets, wire_tickets):
    """features.online gives the builder's exact float32 features and categories on every ticket."""
    rows = generated_tickets + [Ticket.model_validate(r).model_dump(mode="json") for r in wire_tickets]
    assert bundle.escalation_model.feature_name() == bundle.primary.features
    assert any("__" in name for name in bundle.builder.feature_names_), "per-label outcome rates are compared too"
    _, expected = bundle.build_features(pd.DataFrame(rows))
    online = OnlineFeatures(bundle.builder)
    got = online.transform_many(rows)[0]
    want = np.column_stack([
        expected[name].cat.codes.to_numpy().astype(float) if name in online.categories
        else expected[name].to_numpy(dtype="float64", na_value=np.nan)
        for name in online.names
    ])
    want[:, [online.position[c] for c in online.categories]] = np.where(
        want[:, [online.position[c] for c in online.categories]] < 0, np.nan,
        want[:, [online.position[c] for c in online.categories]])
    mismatched = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    bad = sorted({online.names[j] for j in np.nonzero(mismatched)[1]})
    assert not bad, f"online features differ from FeatureBuilder.transform in: {bad}"

    # One ticket at a time: the scalar path, first with an empty text cache, then from the cache.
    fresh = OnlineFeatures(bundle.builder)
    for attempt in ("computed", "cached"):
        single = np.vstack([fresh.transform_many([row])[0] for row in rows[::5]])
        mismatched = ~((single == got[::5]) | (np.isnan(single) & np.isnan(got[::5])))
        bad = sorted({online.names[j] for j in np.nonzero(mismatched)[1]})
        assert not bad, f"single-ticket features ({attempt} text) differ from the batch path in: {bad}"
    assert len(fresh.text_cache) > 0


def test_fast_path_equals_model_bundle_score(bundle, generated_tickets):
    """score_many (one ticket or a batch) == ModelBundle.score, field by field."""
    reference = bundle.score(pd.DataFrame(generated_tickets))
    online = OnlineFeatures(bundle.builder)
    classes = bundle.metadata["priority_classes"]
    batch = score_many(bundle, online, generated_tickets)
    singles = {i: score_many(bundle, online, [generated_tickets[i]])[0] for i in range(0, len(generated_tickets), 7)}
    for i, fast in enumerate(batch):
        ref = reference.iloc[i]
        assert fast["escalation_probability"] == ref["escalation_probability"]
        assert (fast["band"], fast["escalate_now"], fast["priority_predicted"]) == (
            ref["band"], bool(ref["escalate_now"]), ref["priority_predicted"])
        assert fast["priority_probabilities"] == {c: ref[f"priority_probability_{c}"] for c in classes}
        assert fast["reasons"] == ref["reasons"]
        for label in bundle.labels:  # every label, exactly as the offline path gives it
            entry = fast["types"][label.name]
            assert entry["probability"] == ref[f"escalation_probability__{label.name}"]
            assert (entry["band"], entry["escalate_now"]) == (ref[f"band__{label.name}"],
                                                              bool(ref[f"escalate_now__{label.name}"]))
        assert fast["likely_type"] == ref["likely_type"]
        if i in singles:
            assert singles[i] == fast


def test_service_scores_equal_training_scores(client, small_result, wire_tickets):
    """Test-period snapshots sent over HTTP, one by one and in batches, get training's probability."""
    snapshots = small_result.snapshots
    test = snapshots.loc[snapshots["split"] == "test"].head(len(wire_tickets))
    expected = small_result.test_scores.set_index(["ticket_id", "snapshot_time"])["probability"]
    training = expected.loc[list(zip(test["ticket_id"].astype(str), test["snapshot_time"], strict=True))].to_numpy()

    batched = []
    for start in range(0, len(wire_tickets), 50):
        response = client.post("/v1/score", json={"tickets": wire_tickets[start:start + 50]}, headers=AUTH)
        assert response.status_code == 200
        batched += [s["escalation"]["probability"] for s in response.get_json()["scores"]]
    np.testing.assert_allclose(batched, training, rtol=0, atol=1e-12)

    single = [client.post("/v1/score", json=t, headers=AUTH).get_json()["escalation"]["probability"]
              for t in wire_tickets[:60]]
    np.testing.assert_allclose(single, training[:60], rtol=0, atol=1e-12)


def messy(ticket: dict) -> dict:
    """The same ticket as another system would write it: other case, spaces and separators."""
    out = dict(ticket)
    for column in ("channel", "category", "subcategory", "customer_tier", "status", "event_type", "priority"):
        if isinstance(out.get(column), str):
            out[column] = f"  {out[column].replace('_', ' ').title()} "
    return out


def test_case_spaces_and_separators_do_not_change_the_score(bundle, generated_tickets):
    """One normal form (features.schema.normalize_category) on the batch path (validate_events and
    the builder) and the serving path (features.online): "Wrong Charge " is "wrong_charge"."""
    clean, shouted = generated_tickets[:300], [messy(t) for t in generated_tickets[:300]]
    assert shouted[0]["channel"] != clean[0]["channel"]
    online = OnlineFeatures(bundle.builder)
    np.testing.assert_array_equal(online.transform_many(shouted)[0], online.transform_many(clean)[0])
    _, batch_clean = bundle.build_features(pd.DataFrame(clean))
    _, batch_shouted = bundle.build_features(pd.DataFrame(shouted))
    pd.testing.assert_frame_equal(batch_shouted, batch_clean)
    assert [s["escalation_probability"] for s in score_many(bundle, online, shouted)] == \
        bundle.score(pd.DataFrame(shouted))["escalation_probability"].tolist() == \
        bundle.score(pd.DataFrame(clean))["escalation_probability"].tolist()


def test_a_bundle_fitted_before_normalisation_is_served_as_it_was_trained(bundle, generated_tickets):
    """A builder without `category_normalization_` (saved before it existed) reads values as sent
    on both paths, so an old bundle keeps its scores; it does not match "Email" to "email"."""
    import copy

    old = copy.copy(bundle.builder)
    del old.category_normalization_
    old_bundle = copy.copy(bundle)
    old_bundle.builder = old
    online = OnlineFeatures(old)
    assert not online.normalize
    tickets = generated_tickets[:200]
    _, expected = old_bundle.build_features(pd.DataFrame(tickets))
    channel = online.position["channel"]
    np.testing.assert_array_equal(online.transform_many(tickets)[0][:, channel],
                                  expected["channel"].cat.codes.replace(-1, np.nan).to_numpy(dtype=float))
    shouted = online.transform_many([messy(t) for t in tickets])[0]
    assert np.isnan(shouted[:, channel]).all(), "an old bundle never saw 'Email': it stays unseen"


def test_a_new_message_on_a_known_ticket_text_gives_the_cold_row(bundle, generated_tickets, monkeypatch):
    """The ticket-text part cache: a ticket scored once, then sent again with a new latest message,
    gets exactly (bit for bit) the row a fresh worker computes, on the single and batch paths, with
    hostile texts; only the new messages are scored again."""
    hostile = hostile_texts(80)
    tickets = [{**t, "description": hostile[i] if i % 3 == 0 else t.get("description"),
                "last_customer_message": hostile[-1 - i][:500]}
               for i, t in enumerate(generated_tickets[::20][:40])]
    updates = [{**t, "last_customer_message": hostile[i + 1]} for i, t in enumerate(tickets)]
    warm = OnlineFeatures(bundle.builder)
    for t in tickets[:20]:
        warm.transform_many([t])
    warm.transform_many(tickets[20:])
    assert len(warm.ticket_part_cache) == len({warm.ticket_texts(t)[0] for t in tickets})
    scored = []
    score_part = warm.text.score_part
    monkeypatch.setattr(warm.text, "score_part", lambda text: scored.append(text) or score_part(text))
    got = np.vstack([warm.transform_many([t])[0] for t in updates[:20]] + [warm.transform_many(updates[20:])[0]])
    assert scored == [u["last_customer_message"] for u in updates], "the ticket texts came from the cache"
    monkeypatch.undo()
    cold = OnlineFeatures(bundle.builder)
    want = np.vstack([cold.transform_many([t])[0] for t in updates[:20]]
                     + [OnlineFeatures(bundle.builder).transform_many(updates[20:])[0]])
    assert got.tobytes() == want.tobytes()
    text_features = cold.text.transform_texts(*zip(*[cold.ticket_texts(u) for u in updates], strict=True))
    assert got[:, cold.text_columns].tobytes() == text_features.astype(np.float32).astype(np.float64).tobytes()
