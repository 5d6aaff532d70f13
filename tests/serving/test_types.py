"""Escalation by type through the service: `escalation.types` and the matrix's type keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.model import load_bundle, show_value
from serving.policy import PolicyError, TypeRisk, describe_types, load_policy
from tests.serving.conftest import AUTH, make_settings

THEN = "then: {route_to: %s, tier: %s, escalation_type: %s, respond_within: 4}"


def test_score_returns_one_entry_per_trained_label(client, serving_models_dir, wire_tickets, small_result):
    bundle = load_bundle(serving_models_dir / "current")
    body = client.post("/v1/score", json={"tickets": wire_tickets[:25]}, headers=AUTH).get_json()
    expected = bundle.score(pd.DataFrame(wire_tickets[:25]))
    rows, features = bundle.build_features(pd.DataFrame(wire_tickets[:25]))
    names = [label.name for label in small_result.labels]
    for i, score in enumerate(body["scores"]):
        escalation = score["escalation"]
        assert list(escalation["types"]) == names, "every trained label, the primary first"
        primary = escalation["types"][names[0]]
        assert primary["probability"] == escalation["probability"] and primary["band"] == escalation["band"]
        assert primary["reasons"] == escalation["reasons"], "escalation.* stays the primary label's"
        for name, entry in escalation["types"].items():
            assert set(entry) == {"escalation_type", "probability", "band", "escalate_now", "reasons"}
            assert entry["probability"] == pytest.approx(expected[f"escalation_probability__{name}"].iloc[i], abs=1e-9)
            assert entry["band"] == expected[f"band__{name}"].iloc[i]
            assert len(entry["reasons"]) == 3
            effects = [abs(r["effect"]) for r in entry["reasons"]]
            assert effects == sorted(effects, reverse=True)
            for reason in entry["reasons"]:  # the value of the label's own feature, as the offline path has it
                raw = rows[reason["feature"]].iat[i] if reason["feature"] in bundle.builder.categorical_features_ else None
                want = show_value(features[reason["feature"]].iat[i], raw)
                assert reason["value"] == (pytest.approx(want) if isinstance(want, float) else want), (name, reason)
        typed = {e["escalation_type"]: e["probability"] for e in escalation["types"].values() if e["escalation_type"]}
        assert escalation["likely_type"] == max(typed, key=typed.get)
    # A typed label's reasons may name its own outcome rates, shown in words.
    shown = {r["feature"]: r["label"] for s in body["scores"] for e in s["escalation"]["types"].values()
             for r in e["reasons"]}
    for feature, label in shown.items():
        if "__" in feature:
            assert label.endswith("escalations)"), (feature, label)


def test_single_and_batch_paths_agree_on_every_label(client, wire_tickets):
    batch = client.post("/v1/score", json={"tickets": wire_tickets[:5]}, headers=AUTH).get_json()["scores"]
    for ticket, scored in zip(wire_tickets[:5], batch, strict=True):
        single = client.post("/v1/score", json=ticket, headers=AUTH).get_json()
        for name, entry in scored["escalation"]["types"].items():
            assert single["escalation"]["types"][name]["probability"] == pytest.approx(entry["probability"], abs=1e-12)


def test_type_keys_match_the_likely_type_and_each_types_band():
    from serving.policy import EscalationMatrix

    matrix = EscalationMatrix.model_validate({"rules": [
        {"name": "sla-desk", "when": {"type_band": {"time_based": ["high"]}},
         "then": {"route_to": "SLA desk", "tier": "supervisor", "escalation_type": "time_based", "respond_within": 4}},
        {"name": "supervisor-call-back", "when": {"band": ["high", "medium"], "likely_type": ["customer_initiated"]},
         "then": {"route_to": "supervisor", "tier": "supervisor", "escalation_type": "customer_initiated",
                  "respond_within": 8}},
        {"name": "default", "then": {"route_to": "team", "tier": "frontline", "escalation_type": "time_based",
                                     "respond_within": 72}},
    ]})
    sla_risk = describe_types({"any": {"escalation_type": None, "band": "medium"},
                               "sla": {"escalation_type": "time_based", "band": "high"},
                               "customer": {"escalation_type": "customer_initiated", "band": "medium"}},
                              "customer_initiated")
    assert sla_risk == TypeRisk("customer_initiated", (("customer_initiated", "medium"), ("time_based", "high")))
    assert matrix.decide("medium", "normal", None, types=sla_risk)["rule"] == "sla-desk"
    calm_sla = TypeRisk("customer_initiated", (("customer_initiated", "medium"), ("time_based", "low")))
    assert matrix.decide("medium", "normal", None, types=calm_sla)["rule"] == "supervisor-call-back"
    assert matrix.decide("low", "normal", None, types=calm_sla)["rule"] == "default"
    # A model without typed labels: a rule that asks about types does not match.
    assert matrix.decide("high", "normal", None)["rule"] == "default"
    two_of_a_kind = describe_types({"a": {"escalation_type": "functional", "band": "low"},
                                    "b": {"escalation_type": "functional", "band": "high"}})
    assert two_of_a_kind.band_of("functional") == "high", "two labels of one kind: the higher band"


@pytest.mark.parametrize(("when", "message"), [
    ("{likely_type: [sla]}", "rules.0.when.likely_type.0"),
    ("{type_band: {sla: [high]}}", "rules.0.when.type_band.sla"),
    ("{type_band: {time_based: [severe]}}", "rules.0.when.type_band.time_based.0"),
])
def test_bad_type_keys_are_refused_with_the_location(tmp_path, when, message):
    path = tmp_path / "matrix.yaml"
    path.write_text(f"rules:\n  - name: x\n    when: {when}\n    {THEN % ('a', 'manager', 'priority')}\n"
                    f"  - name: d\n    {THEN % ('a', 'frontline', 'priority')}\n")
    with pytest.raises(PolicyError, match=message.replace(".", r"\.")):
        load_policy(path)


def test_the_response_routes_by_the_policy_files_type_keys(tmp_path, serving_models_dir, wire_tickets):
    """The likely type decides the route: every ticket goes to the desk of its own most likely kind."""
    from serving import create_app

    kinds = ["hierarchical", "functional", "time_based", "priority", "customer_initiated"]
    rules = "".join(f"  - name: {kind}-desk\n    when: {{likely_type: [{kind}]}}\n"
                    f"    {THEN % (kind + ' desk', 'supervisor', kind)}\n" for kind in kinds)
    path = tmp_path / "matrix.yaml"
    path.write_text(f"rules:\n{rules}  - name: d\n    {THEN % ('team', 'frontline', 'time_based')}\n")
    client = create_app(make_settings(serving_models_dir, policy_path=path)).test_client()
    scores = client.post("/v1/score", json={"tickets": wire_tickets[:40]}, headers=AUTH).get_json()["scores"]
    likely = [s["escalation"]["likely_type"] for s in scores]
    assert [s["action"]["rule"] for s in scores] == [f"{kind}-desk" for kind in likely]
    assert len(set(likely)) > 1, "different tickets, different likely kinds"
    assert all(np.isfinite(s["escalation"]["probability"]) for s in scores)


def test_a_watcher_alert_routes_by_the_matrix_type_keys(tmp_path, serving_models_dir, wire_tickets):
    """The queue watch alerts on the primary label's line as before; the alert's action comes from the
    matrix, whose rules may match the most likely kind (a rule per kind: the alert names its kind's desk)."""
    from serving.destinations import Destinations
    from serving.live_model import ModelHolder
    from serving.policy import as_utc
    from serving.scoring import score_states
    from serving.store.db import create_store_engine, upgrade_database
    from serving.store.tickets import TicketStore
    from serving.watcher import Watcher
    from tests.serving.test_watcher import find_aging_ticket

    kinds = ["hierarchical", "functional", "time_based", "priority", "customer_initiated"]
    rules = "".join(f"  - name: {kind}-desk\n    when: {{likely_type: [{kind}]}}\n"
                    f"    {THEN % (kind + ' desk', 'supervisor', kind)}\n" for kind in kinds)
    path = tmp_path / "matrix.yaml"
    path.write_text(f"rules:\n{rules}  - name: d\n    {THEN % ('team', 'frontline', 'time_based')}\n")
    url = f"sqlite:///{tmp_path / 'tickets.db'}"
    upgrade_database(url)
    engine = create_store_engine(url)
    settings = make_settings(serving_models_dir, store_url=url, policy_path=path)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    assert holder.reload().ok
    policy = load_policy(path)
    try:
        ticket, age = find_aging_ticket(holder.live, policy, settings, wire_tickets)
        watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations())
        watcher.tickets.record_events([ticket], "test")
        start = as_utc(ticket["event_time"])
        assert watcher.tick(start + age).alerts_raised == 1
        alert = watcher.alerts.alerts_for_ticket(str(ticket["ticket_id"]))[0]
        state = {**ticket, "event_time": (start + age).isoformat()}
        likely = score_states(holder.live, policy, [state], settings, start + age)[0]["escalation"]["likely_type"]
        assert likely in kinds
        assert alert["action"]["rule"] == f"{likely}-desk" and alert["action"]["route_to"] == f"{likely} desk"
    finally:
        engine.dispose()
