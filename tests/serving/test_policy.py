"""The escalation matrix: decisions, and clear errors for a bad policy file at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.policy import PolicyError, load_policy
from tests.serving.conftest import AUTH, make_settings

DEFAULT = Path(__file__).resolve().parents[2] / "serving" / "escalation_matrix.yaml"


@pytest.mark.parametrize(
    ("band", "priority", "category", "rule", "tier", "hours"),
    [
        ("high", "urgent", "billing", "urgent-high-risk", "manager", 4),
        ("high", "normal", "technical", "high-risk-technical", "specialist_team", 24),
        ("high", "low", "Billing", "high-risk-billing", "specialist_team", 24),
        ("high", "normal", "account", "high-risk", "supervisor", 24),
        ("medium", "high", None, "medium-risk-urgent", "supervisor", 24),
        ("medium", "normal", "billing", "medium-risk", "frontline", 48),
        ("low", "urgent", "technical", "default", "frontline", 72),
    ],
)
def test_default_matrix_decisions(band, priority, category, rule, tier, hours):
    action = load_policy(DEFAULT).decide(band, priority, category)
    assert (action["rule"], action["tier"], action["respond_within"]) == (rule, tier, hours)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("rules: []", "rules: List should have at least 1 item"),
        ("rules:\n  - name: x\n    when: {band: [severe]}\n    then: {route_to: a, tier: manager, "
         "escalation_type: priority, respond_within: 4}\n  - name: d\n    then: {route_to: a, tier: frontline, "
         "escalation_type: priority, respond_within: 4}\n", "rules.0.when.band.0"),
        ("rules:\n  - name: d\n    then: {route_to: a, tier: boss, escalation_type: priority, respond_within: -1}\n",
         "rules.0.then.tier"),
        ("rules:\n  - name: x\n    when: {band: [high]}\n    then: {route_to: a, tier: manager, "
         "escalation_type: priority, respond_within: 4}\n", "last rule must have no `when`"),
        ("rules:\n  - name: d\n    then: {route_to: a, tier: frontline, escalation_type: priority, "
         "respond_within: 4, colour: red}\n", "rules.0.then.colour"),
    ],
)
def test_bad_policy_is_refused_with_the_location(tmp_path, text, message):
    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert message in str(info.value)


def test_bad_policy_stops_the_service_from_starting(tmp_path, serving_models_dir):
    from serving import create_app

    path = tmp_path / "matrix.yaml"
    path.write_text("rules:\n  - name: d\n    then: {route_to: a, tier: boss, escalation_type: x, respond_within: 1}\n")
    with pytest.raises(PolicyError, match="rules.0.then.tier"):
        create_app(make_settings(serving_models_dir, policy_path=path))
    with pytest.raises(PolicyError, match="does not exist"):
        create_app(make_settings(serving_models_dir, policy_path=tmp_path / "missing.yaml"))


def test_action_in_response_follows_the_policy_file(tmp_path, serving_models_dir, wire_tickets):
    from serving import create_app

    path = tmp_path / "matrix.yaml"
    path.write_text(
        "rules:\n  - name: billing-desk\n    when: {category: [billing]}\n"
        "    then: {route_to: billing desk, tier: specialist_team, escalation_type: functional, respond_within: 8}\n"
        "  - name: rest\n    then: {route_to: frontline, tier: frontline, escalation_type: time_based, "
        "respond_within: 72}\n"
    )
    client = create_app(make_settings(serving_models_dir, policy_path=path)).test_client()
    for ticket in wire_tickets[:10]:
        action = client.post("/v1/score", json=ticket, headers=AUTH).get_json()["action"]
        expected = "billing-desk" if ticket["category"] == "billing" else "rest"
        assert action["rule"] == expected
