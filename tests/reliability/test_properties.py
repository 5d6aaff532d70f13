"""Property tests (Hypothesis): any JSON value sent to the ticket parser or an integration adapter
gets a 2xx or a JSON 4xx naming the problem, never an exception or a 500."""

from __future__ import annotations

import contextlib
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from features.settings import Settings
from serving.adapters import SYSTEMS, PayloadError, adapt_payload, event_to_ticket
from serving.schemas import Ticket
from tests.reliability.conftest import AUTH

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
TIMES = st.sampled_from(["2025-03-01T10:00:00Z", "2025-03-01T09:00:00+01:00", "2025-03-01", "0001-01-01T00:00:00+01:00",
                         "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z", "not a time", "", "2025-13-45T99:99:99"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4), max_leaves=12)
VALUE = JSON | TIMES


def shaped(keys: list[str]) -> st.SearchStrategy[dict]:
    """Objects with the keys a parser looks for, each holding any JSON value (deeper than random keys reach)."""
    return st.dictionaries(st.sampled_from(keys), VALUE, max_size=len(keys))


TICKET_KEYS = list(Ticket.model_fields)
ZENDESK_KEYS = ["id", "created_at", "updated_at", "via", "priority", "status", "tags", "custom_fields", "type",
                "requester_id", "assignee_id", "group_id", "subject", "raw_subject", "description", "due_at"]
SERVICENOW_KEYS = ["number", "sys_id", "opened_at", "sys_updated_on", "priority", "state", "contact_type",
                   "escalation", "reassignment_count", "reopen_count", "category", "subcategory", "caller_id",
                   "assigned_to", "assignment_group", "short_description", "description", "sla_due"]
FRESHDESK_KEYS = ["id", "created_at", "updated_at", "priority", "status", "source", "custom_fields", "type",
                  "requester_id", "responder_id", "group_id", "subject", "description_text", "description",
                  "due_by", "is_escalated"]
ZENDESK_EVENT_KEYS = ["current", "previous", "comment"]
FRESHDESK_WEBHOOK_KEYS = ["ticket_id", "ticket_status", "ticket_priority", "ticket_source", "ticket_tags",
                          "ticket_created_on", "ticket_modified_on", "ticket_due_by_time", "ticket_cf_category",
                          "triggered_event", "ticket_group_name", "ticket_description"]
ADAPTER_INPUT = {
    "zendesk": JSON | shaped(ZENDESK_KEYS) | st.fixed_dictionaries({"ticket": shaped(ZENDESK_KEYS)})
    | st.fixed_dictionaries({"detail": shaped(ZENDESK_KEYS), "time": VALUE})
    | st.fixed_dictionaries({"type": st.sampled_from(["zen:event-type:ticket.comment_added",
                                                      "zen:event-type:ticket.status_changed",
                                                      "zen:event-type:ticket.group_assignment_changed",
                                                      "zen:event-type:user.created"]),
                             "detail": shaped(ZENDESK_KEYS), "time": TIMES, "id": VALUE,
                             "event": shaped(ZENDESK_EVENT_KEYS) | JSON})
    | st.fixed_dictionaries({"tickets": st.lists(shaped(ZENDESK_KEYS) | JSON, max_size=3),
                             "organizations": VALUE})
    | st.fixed_dictionaries({"id": st.integers(1, 99), "created_at": TIMES, "via": shaped(["channel"]),
                             "tags": VALUE, "custom_fields": VALUE}),
    "servicenow": JSON | shaped(SERVICENOW_KEYS) | st.fixed_dictionaries({"result": shaped(SERVICENOW_KEYS) | JSON})
    | st.fixed_dictionaries({"number": st.just("INC1"), "opened_at": TIMES, "priority": VALUE, "state": VALUE,
                             "escalation": VALUE, "reassignment_count": VALUE})
    | st.fixed_dictionaries({"result": st.lists(shaped(SERVICENOW_KEYS) | JSON, max_size=3)})
    | st.fixed_dictionaries({"number": st.fixed_dictionaries({"value": VALUE, "display_value": VALUE}),
                             "opened_at": st.fixed_dictionaries({"value": TIMES, "display_value": TIMES}),
                             "caller_id": st.fixed_dictionaries({"link": VALUE, "display_value": VALUE})}),
    "freshdesk": JSON | shaped(FRESHDESK_KEYS) | st.fixed_dictionaries({"ticket": shaped(FRESHDESK_KEYS)})
    | st.fixed_dictionaries({"freshdesk_webhook": shaped(FRESHDESK_WEBHOOK_KEYS) | JSON})
    | shaped(FRESHDESK_WEBHOOK_KEYS)
    | st.fixed_dictionaries({"id": st.integers(1, 99), "created_at": TIMES, "custom_fields": VALUE,
                             "is_escalated": VALUE, "source": VALUE}),
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_adapters_map_or_name_the_problem_for_any_json(system):
    settings_ = Settings()

    @FUZZ
    @given(payload=ADAPTER_INPUT[system])
    def check(payload):
        try:
            adapted = adapt_payload(system, payload, {}, settings_)
        except PayloadError as exc:
            assert exc.problems and all(isinstance(f, str) and isinstance(m, str) for f, m in exc.problems)
            return
        assert adapted.events and len(adapted.events) == len(adapted.sources)
        for event in adapted.events:
            assert isinstance(event["ticket_id"], str) and None not in event.values()
            json.dumps(event)  # what the ticket store records is plain JSON
            with contextlib.suppress(ValidationError):
                Ticket.model_validate(event_to_ticket(event))
        assert all(set(w) == {"field", "value", "message"} for w in adapted.warnings)

    check()


@FUZZ
@given(body=JSON | shaped(TICKET_KEYS) | st.fixed_dictionaries({"tickets": st.lists(shaped(TICKET_KEYS), max_size=3)}))
def test_ticket_parser_accepts_or_names_the_problem_for_any_json(body):
    try:
        Ticket.model_validate(body)
    except ValidationError as exc:
        assert exc.errors()


def dumps(body: object) -> bytes:
    """The stdlib encoder: it also writes integers beyond 64 bits, which the service must refuse cleanly."""
    return json.dumps(body).encode()


def assert_json_answer(response) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = orjson.loads(response.get_data())
    if response.status_code >= 400:
        assert body["error"] and body["message"]


def test_score_endpoint_answers_any_json_with_2xx_or_json_4xx(app, wire_tickets):
    client = app.test_client()
    valid = st.sampled_from(wire_tickets[:20])
    mutated = st.builds(lambda t, k, v: {**t, k: v}, valid, st.sampled_from(TICKET_KEYS), VALUE)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=JSON | shaped(TICKET_KEYS) | mutated | st.fixed_dictionaries({"tickets": st.lists(mutated, max_size=3)}))
    def check(body):
        assert_json_answer(client.post("/v1/score", data=dumps(body), headers=AUTH,
                                       content_type="application/json"))

    check()


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_integration_endpoints_answer_any_json_with_2xx_or_json_4xx(app, system):
    client = app.test_client()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=ADAPTER_INPUT[system])
    def check(body):
        assert_json_answer(client.post(f"/v1/integrations/{system}", data=dumps(body), headers=AUTH,
                                       content_type="application/json"))

    check()
