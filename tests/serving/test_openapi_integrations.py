"""The integration bodies in /openapi.json and /docs: real schemas that the vendor fixtures satisfy,
one example per vendor shape (each scored), value tables and the Zendesk signature set-up."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest

from serving.integration_docs import EXAMPLES
from tests.serving.conftest import AUTH

FIXTURES = Path(__file__).parent / "fixtures"
SHAPES = json.loads((FIXTURES / "shapes.json").read_text())["shapes"]
PAYLOAD = {"zendesk": "ZendeskPayload", "servicenow": "ServiceNowPayload", "freshdesk": "FreshdeskPayload"}


@pytest.fixture(scope="module")
def document(serving_models_dir):
    from serving import create_app
    from tests.serving.conftest import make_settings

    app = create_app(make_settings(serving_models_dir), load_model=False)
    return app.test_client().get("/openapi.json").get_json()


def validator(document: dict, system: str):
    """The vendor's payload schema, its $refs resolved inside the document."""
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{PAYLOAD[system]}",
                                        "components": document["components"]})


def test_integration_body_is_a_real_schema(document):
    operation = document["paths"]["/v1/integrations/{system}"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] != {"type": "object"}
    schemas = document["components"]["schemas"]
    zendesk = schemas["ZendeskTicket"]
    assert {"id", "created_at", "via", "priority", "status", "tags"} <= set(zendesk["properties"])
    assert "web_form" in zendesk["properties"]["via"]["description"], "the value table lists accepted values"
    assert "zen:event-type:ticket.comment_added" in json.dumps(schemas["ZendeskEventWebhook"])
    assert "sysparm_display_value=all" in schemas["ServiceNowIncident"]["description"]
    assert "Waiting" not in schemas["FreshdeskWebhookFlat"]["properties"]["ticket_status"]["description"]
    assert "X-Zendesk-Webhook-Signature" in operation["description"]
    assert len(body["examples"]) == len(EXAMPLES) >= 9


@pytest.mark.parametrize("shape", SHAPES, ids=[s["file"] for s in SHAPES])
def test_every_vendor_fixture_satisfies_the_documented_schema(document, shape):
    payload = json.loads((FIXTURES / shape["file"]).read_text())
    errors = [str(e) for e in validator(document, shape["system"]).iter_errors(payload)]
    assert not errors, errors[:3]


def test_not_a_vendor_payload_does_not_satisfy_it(document):
    assert not validator(document, "zendesk").is_valid({"tickets": "all of them"})
    assert not validator(document, "servicenow").is_valid({"short_description": "no number nor sys_id"})


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_documented_example_is_scored(client, document, name):
    system, _, value = EXAMPLES[name]
    assert validator(document, system).is_valid(value)
    response = client.post(f"/v1/integrations/{system}", json=value, headers=AUTH)
    assert response.status_code == 200, response.get_json()
    assert 0 <= response.get_json()["escalation"]["probability"] <= 1


def test_docs_page_shows_the_integration_shapes(client):
    html = client.get("/docs").get_data(as_text=True)
    for name in EXAMPLES:
        assert f'id="example-{name}"' in html
    for schema in ("ZendeskEventWebhook", "ServiceNowIncident", "FreshdeskWebhookFlat"):
        assert f'id="schema-{schema}"' in html
    assert "X-Zendesk-Webhook-Signature" in html and "ESCALATION_RISK_ZENDESK_WEBHOOK_SECRET" in html
    assert "strict" in html
