"""The escalation matrix: decisions, and clear errors for a bad policy file at start-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.policy import PolicyError, TicketFacts, describe_ticket, load_policy
from tests.serving.conftest import AUTH, make_settings

DEFAULT = Path(__file__).resolve().parents[2] / "serving" / "escalation_matrix.yaml"


@pytest.mark.parametrize(
    ("band", "priority", "category", "rule", "tier", "hours"),
    [
        ("high", "urgent", "billing", "urgent-high-risk", "manager", 4),
        ("high", "normal", "technical", "high-risk-technical", "specialist_team", 24),
        ("high", "low", "Billing", "high-risk-billing", "specialist_team", 24),
        ("high", "low", " BILLING ", "high-risk-billing", "specialist_team", 24),
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


def test_bad_policy_names_the_line(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text("version: 1\nrules:\n  - name: x\n    when: {band: [high]}\n"
                    "    then: {route_to: a, tier: boss, escalation_type: priority, respond_within: 4}\n"
                    "  - name: d\n    then: {route_to: a, tier: frontline, escalation_type: priority, "
                    "respond_within: 4}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert f"{path}" in str(info.value)
    assert "line 5: rules.0.then.tier" in str(info.value)


NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def ticket_facts(**ticket) -> TicketFacts:
    ticket.setdefault("event_time", NOW.isoformat())
    return describe_ticket(ticket, NOW)


@pytest.mark.parametrize("typed", ["urgent", "P1", "p1", " Urgent "])
@pytest.mark.parametrize("band", ["low", "medium", "high"])
@pytest.mark.parametrize("predicted", ["low", "normal", "high", "urgent"])
@pytest.mark.parametrize("category", ["technical", "billing", "account", None])
def test_default_matrix_never_parks_a_typed_urgent_ticket(typed, band, predicted, category):
    action = load_policy(DEFAULT).decide(band, predicted, category, ticket_facts(priority=typed))
    assert (action["tier"], action["respond_within"]) != ("frontline", 72), action
    assert action["respond_within"] <= 4, action


@pytest.mark.parametrize("tier", ["vip", "VIP"])
@pytest.mark.parametrize("band", ["low", "medium", "high"])
@pytest.mark.parametrize("typed", ["low", "normal", "high", "urgent", None])
def test_default_matrix_never_parks_a_vip(tier, band, typed):
    action = load_policy(DEFAULT).decide(band, "low", "account", ticket_facts(customer_tier=tier, priority=typed))
    assert action["tier"] != "frontline" and action["respond_within"] <= 24, action


def test_servicenow_p1_rated_low_goes_to_a_supervisor_within_4_hours():
    """Before the typed-priority keys, a P1 incident the model rated low got 'frontline, 72 h'."""
    action = load_policy(DEFAULT).decide("low", "normal", "Category 26", ticket_facts(priority="P1"))
    assert (action["rule"], action["tier"], action["respond_within"]) == ("typed-urgent", "supervisor", 4)


def test_time_rules_follow_the_clock():
    policy = load_policy(DEFAULT)
    due = (NOW - timedelta(minutes=1)).isoformat()
    assert policy.decide("low", "normal", None, ticket_facts(sla_due_at=due))["rule"] == "sla-breached"
    not_due = (NOW + timedelta(hours=1)).isoformat()
    assert policy.decide("low", "normal", None, ticket_facts(sla_due_at=not_due))["rule"] == "default"
    waited = (NOW - timedelta(hours=30)).isoformat()
    facts = describe_ticket({"event_time": NOW.isoformat(), "last_customer_message_at": waited}, NOW,
                            last_update_at=waited)
    assert policy.decide("low", "normal", None, facts)["rule"] == "customer-waiting"
    # the same ticket with a recent update (an agent replied) is not waiting
    recent = describe_ticket({"last_customer_message_at": waited}, NOW, last_update_at=NOW - timedelta(hours=2))
    assert policy.decide("low", "normal", None, recent)["rule"] == "default"
    # remembered decisions still follow the clock (thresholds are part of the memory key)
    assert policy.decide("low", "normal", None, facts)["rule"] == "customer-waiting"


def test_a_rule_on_an_unknown_fact_does_not_match(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text("rules:\n  - name: gold\n    when: {customer_tier: [gold], sla_breached: false}\n"
                    "    then: {route_to: gold desk, tier: supervisor, escalation_type: priority, respond_within: 8}\n"
                    "  - name: d\n    then: {route_to: a, tier: frontline, escalation_type: time_based, "
                    "respond_within: 72}\n")
    policy = load_policy(path)
    assert policy.decide("low", "low", None, ticket_facts(customer_tier="Gold"))["rule"] == "d"  # SLA unknown
    later = (NOW + timedelta(hours=3)).isoformat()
    assert policy.decide("low", "low", None, ticket_facts(customer_tier="Gold", sla_due_at=later))["rule"] == "gold"
