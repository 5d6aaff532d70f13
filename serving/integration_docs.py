"""The OpenAPI description of POST /v1/integrations/{system}: each vendor's accepted shapes as JSON
Schemas (fields, wrappers, value tables built from serving.adapters' own tables) and one example
per shape. tests/serving/test_openapi_integrations.py posts every example and requires a 200."""

from __future__ import annotations

from collections import defaultdict

from serving import adapters

# Vendors send null for unset fields: every field may be null.
STRING = {"type": ["string", "null"]}
ID = {"type": ["string", "integer", "null"]}
TIME = {"type": ["string", "null"], "description": "ISO 8601 (UTC with Z or an offset)"}


def value_table(table: dict, canonical: str) -> str:
    """A vendor value table as text: "web, web_form, 0 -> web; email, 4 -> email" (unknown values
    pass on in normal form, or as not set for the priority, with a warning)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for vendor, value in table.items():
        grouped[str(value)].append(str(vendor))
    rows = "; ".join(f"{', '.join(vendors)} -> {value}" for value, vendors in grouped.items())
    return (f"Accepted {canonical} values (case, spaces, hyphens and underscores do not matter): {rows}. "
            "Any other value is scored with a warning (a priority as not set, others passed on in normal "
            "form; a value the model was not trained on scores as 'other').")


def field(schema: dict, description: str) -> dict:
    return {**schema, "description": description}


def zendesk_schemas() -> dict[str, dict]:
    ticket = {
        "type": "object",
        "description": "A Zendesk Tickets API ticket object (developer.zendesk.com/api-reference/ticketing/"
                       "tickets/tickets); a trigger webhook's JSON may send the same field names with "
                       "placeholder values ({{ticket.status}} -> \"Open\", {{ticket.via}} -> \"Web Form\", "
                       "{{ticket.tags}} -> \"a b\"). Other fields are ignored.",
        "required": ["id", "created_at"],
        "properties": {
            "id": field(ID, "ticket id -> ticket_id"),
            "created_at": field(TIME, "-> created_at"),
            "updated_at": field(TIME, "-> event_time (created_at when absent)"),
            "via": {"type": ["object", "string", "null"], "description": "via.channel (or a placeholder's via label) -> "
                    "channel. " + value_table(adapters.ZENDESK_CHANNELS, "via.channel"),
                    "properties": {"channel": {"type": ["string", "integer"]}}},
            "priority": field(STRING, value_table(adapters.ZENDESK_PRIORITIES, "priority")),
            "status": field(STRING, value_table(adapters.ZENDESK_STATUSES, "status")),
            "type": field(STRING, "-> category unless the integration mapping file says otherwise"),
            "tags": {"type": ["array", "string", "null"], "items": STRING,
                     "description": "customer_tier from the first of vip, gold, standard (integration mapping file)"},
            "custom_fields": {"type": ["array", "null"], "items": {"type": "object", "properties": {"id": ID, "value": {}}},
                              "description": "read where the integration mapping file says (e.g. the category)"},
            "requester_id": field(ID, "-> customer_id"),
            "assignee_id": field(ID, "-> agent_id"),
            "group_id": field(ID, "-> group"),
            "organization_id": field(ID, "matches a sideloaded organization (?include=organizations)"),
            "subject": field(STRING, "-> subject"),
            "description": field(STRING, "-> description"),
            "due_at": field(TIME, "-> sla_due_at"),
        },
    }
    event = {
        "type": "object",
        "description": "A Zendesk event webhook (zen:event-type:ticket.*; developer.zendesk.com/api-reference/"
                       "webhooks/event-types/ticket-events): `detail` is the ticket now, `event` what changed. "
                       "It becomes a partial event (source_event_id = id): comment_added with a public comment "
                       "by an end user -> customer_message, by staff (author.is_staff) -> agent_message; "
                       "status/priority/group/assignee changes -> those fields. It is scored on its own when "
                       "detail.created_at is there.",
        "required": ["type", "detail"],
        "properties": {
            "type": field(STRING, ", ".join(f"zen:event-type:ticket.{kind}" for kind in (
                "created", "comment_added", "status_changed", "priority_changed", "group_assignment_changed",
                "agent_assignment_changed")) + "; any other ticket.* type is read from detail (the ticket as it stands)"),
            "id": field(STRING, "the event's id -> source_event_id"),
            "time": field(TIME, "-> event_time"),
            "subject": field(STRING, "zen:ticket:<id>"),
            "detail": {**ticket, "description": "the ticket's fields as in a ticket object (ids as strings, "
                                                "enums upper case); `via.channel` -> channel", "required": ["id"]},
            "event": {"type": ["object", "null"], "properties": {
                "current": {}, "previous": {},
                "comment": {"type": "object", "properties": {
                    "body": STRING, "is_public": {"type": ["boolean", "null"]},
                    "author": {"type": "object", "properties": {"id": ID, "is_staff": {"type": ["boolean", "null"]}}}}}}},
        },
    }
    return {
        "ZendeskTicket": ticket,
        "ZendeskTicketWrapper": {"type": "object", "required": ["ticket"], "description":
                                 "GET /api/v2/tickets/{id} (sideloads such as `organizations` are read too)",
                                 "properties": {"ticket": {"$ref": "#/components/schemas/ZendeskTicket"},
                                                "organizations": {"type": "array", "items": {"type": "object"}}}},
        "ZendeskTicketList": {"type": "object", "required": ["tickets"], "description": "several tickets: "
                              "answered as a batch {results, errors}",
                              "properties": {"tickets": {"type": "array",
                                                         "items": {"$ref": "#/components/schemas/ZendeskTicket"}}}},
        "ZendeskEventWebhook": event,
    }


def servicenow_schemas() -> dict[str, dict]:
    value = {"type": ["string", "object", "null"], "properties": {"value": {}, "display_value": {}, "link": STRING}}
    record = {
        "type": "object",
        "description": "A ServiceNow incident record as the Table API returns it (GET /api/now/table/incident): "
                       "sysparm_display_value=false (raw codes, sys_id references {value, link}, times in UTC "
                       "as yyyy-MM-dd HH:mm:ss), =true (labels such as \"2 - High\", references {display_value, "
                       "link}, times in the API user's date format and time zone: ESCALATION_RISK_SERVICENOW_"
                       "DATE_FORMATS, _TIME_ZONE) or sysparm_display_value=all ({value, display_value} pairs: times from `value`, "
                       "references in the form the model was trained on: ESCALATION_RISK_SERVICENOW_REFERENCES, "
                       "default display_value). A record without opened_at is an update carrying only what "
                       "changed (a business rule's outbound message): a partial event, which needs the ticket "
                       "store to be scored. Other fields are ignored; the servicenow mapping's extra fields "
                       "(opened_by, sys_created_by, sys_updated_by, location, u_symptom, impact, urgency) go to "
                       "`extra`.",
        "anyOf": [{"required": ["number"]}, {"required": ["sys_id"]}],
        "properties": {
            "number": field(value, "-> ticket_id (sys_id when absent)"),
            "sys_id": field(value, "with sys_mod_count -> source_event_id"),
            "opened_at": field(value, "-> created_at"),
            "sys_updated_on": field(value, "-> event_time"),
            "state": field(value, value_table(adapters.SERVICENOW_STATES, "state (incident_state when absent)")),
            "priority": field(value, value_table(adapters.SERVICENOW_PRIORITIES, "priority")),
            "contact_type": field(value, value_table(adapters.SERVICENOW_CONTACT_TYPES, "contact_type")),
            "escalation": field(value, value_table(adapters.SERVICENOW_LEVELS, "escalation (-> escalation_level)")),
            "category": field(value, "-> category"), "subcategory": field(value, "-> subcategory"),
            "caller_id": field(value, "-> customer_id"), "assigned_to": field(value, "-> agent_id"),
            "assignment_group": field(value, "-> group"),
            "short_description": field(value, "-> subject"), "description": field(value, "-> description"),
            "sla_due": field(value, "-> sla_due_at"),
            "reassignment_count": field(value, "-> reassignment_count"), "reopen_count": field(value, "-> reopen_count"),
            "sys_mod_count": field(value, "updates so far -> agent_messages (as the export mapping counts them)"),
        },
    }
    return {
        "ServiceNowIncident": record,
        "ServiceNowResult": {"type": "object", "required": ["result"], "description":
                             "the Table API's answer: one record, or a list (answered as a batch {results, errors})",
                             "properties": {"result": {"anyOf": [
                                 {"$ref": "#/components/schemas/ServiceNowIncident"},
                                 {"type": "array", "items": {"$ref": "#/components/schemas/ServiceNowIncident"}}]}}},
    }


def freshdesk_schemas() -> dict[str, dict]:
    ticket = {
        "type": "object",
        "description": "A Freshdesk API v2 ticket (GET /api/v2/tickets/{id}; developers.freshdesk.com/api/#tickets).",
        "required": ["id", "created_at"],
        "properties": {
            "id": field(ID, "-> ticket_id"), "created_at": field(TIME, "-> created_at"),
            "updated_at": field(TIME, "-> event_time"),
            "status": field({"type": ["integer", "string", "null"]}, value_table(adapters.FRESHDESK_STATUSES, "status")),
            "priority": field({"type": ["integer", "string", "null"]}, value_table(adapters.FRESHDESK_PRIORITIES, "priority")),
            "source": field({"type": ["integer", "string", "null"]}, value_table(adapters.FRESHDESK_SOURCES, "source")),
            "type": field(STRING, "-> category unless custom_fields.cf_category (integration mapping file)"),
            "custom_fields": {"type": ["object", "null"]}, "tags": {"type": ["array", "null"], "items": STRING},
            "requester_id": field(ID, "-> customer_id"), "responder_id": field(ID, "-> agent_id"),
            "group_id": field(ID, "-> group"), "subject": STRING,
            "description_text": field(STRING, "-> description (or `description` without its HTML)"),
            "due_by": field(TIME, "-> sla_due_at"), "is_escalated": field({"type": ["boolean", "null"]}, "-> escalation_level 0/1"),
        },
    }
    hook_fields = {
        "ticket_id": field(ID, "{{ticket.id}} -> ticket_id"),
        "ticket_created_on": field(STRING, "{{ticket.created_on}} -> created_at; without it the event needs the "
                                           "ticket store"),
        "ticket_modified_on": field(STRING, "{{ticket.modified_on}} -> event_time (else the time received, with a "
                                            "warning)"),
        "ticket_status": field(STRING, "{{ticket.status}} label. " + value_table(adapters.FRESHDESK_STATUSES, "status")),
        "ticket_priority": field(STRING, "{{ticket.priority}} label. "
                                 + value_table(adapters.FRESHDESK_PRIORITIES, "priority")),
        "ticket_source": field(STRING, "{{ticket.source}} label. " + value_table(adapters.FRESHDESK_SOURCES, "source")),
        "ticket_type": field(STRING, "{{ticket.ticket_type}} -> category (after ticket_cf_category)"),
        "ticket_tags": field(STRING, "{{ticket.tags}} \"a, b\" -> customer_tier from vip, gold, standard"),
        "ticket_due_by_time": field(STRING, "{{ticket.due_by_time}} \"August 27 2025 at 11:30 AM IST\" -> sla_due_at"),
        "ticket_group_name": field(STRING, "-> group"), "ticket_agent_email": field(STRING, "-> agent_id"),
        "ticket_requester_email": field(STRING, "-> customer_id"), "ticket_subject": STRING,
        "ticket_description": field(STRING, "-> description (HTML removed)"),
        "triggered_event": field(STRING, "{{triggered_event}}, e.g. {ticket_action:created} -> event_type"),
    }
    hook = {"type": "object", "required": ["ticket_id"], "properties": hook_fields,
            "description": "An automation rule's Trigger webhook body (flat ticket_* keys, placeholder labels). "
                           "Dates: ISO 8601, \"2025-08-24 11:56:51 UTC\", \"August 27 2025 at 11:30 AM IST\", "
                           "\"Sun, 24 Aug, 2025 at 7:40 PM\"; without a zone they are in the helpdesk's time zone "
                           "(ESCALATION_RISK_FRESHDESK_TIME_ZONE). Only the chosen placeholders are sent: a partial "
                           "event."}
    return {
        "FreshdeskTicket": ticket,
        "FreshdeskWebhookFlat": hook,
        "FreshdeskWebhook": {"type": "object", "required": ["freshdesk_webhook"], "description":
                             "the same keys under `freshdesk_webhook` (Freshdesk's simple JSON webhook)",
                             "properties": {"freshdesk_webhook": {"$ref": "#/components/schemas/FreshdeskWebhookFlat"}}},
    }


def integration_schemas() -> dict[str, dict]:
    """Component schemas of every accepted vendor shape, and one per vendor (their oneOf)."""
    schemas = {**zendesk_schemas(), **servicenow_schemas(), **freshdesk_schemas()}
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    schemas["ZendeskPayload"] = {"anyOf": [ref("ZendeskTicketWrapper"), ref("ZendeskEventWebhook"),
                                           ref("ZendeskTicketList"), ref("ZendeskTicket")],
                                 "description": "POST /v1/integrations/zendesk"}
    schemas["ServiceNowPayload"] = {"anyOf": [ref("ServiceNowResult"), ref("ServiceNowIncident")],
                                    "description": "POST /v1/integrations/servicenow"}
    schemas["FreshdeskPayload"] = {"anyOf": [ref("FreshdeskWebhook"), ref("FreshdeskWebhookFlat"), ref("FreshdeskTicket")],
                                   "description": "POST /v1/integrations/freshdesk"}
    return schemas


ZENDESK_SIGNATURE = (
    "Zendesk webhook signatures: in Admin Center > Apps and integrations > Webhooks, create a webhook with "
    "this URL (POST, JSON) for a trigger, or subscribe it to ticket events; copy its signing secret into "
    "ESCALATION_RISK_ZENDESK_WEBHOOK_SECRET. Each request must then carry X-Zendesk-Webhook-Signature = "
    "base64(HMAC-SHA256(secret, X-Zendesk-Webhook-Signature-Timestamp + body)) with a timestamp within "
    "ESCALATION_RISK_ZENDESK_REPLAY_WINDOW_SECONDS (300) of now; each signature is accepted once (a 401 "
    "otherwise; a failed delivery's signature may be retried). Send the API key as a bearer token in the "
    "webhook's authentication settings."
)

EXAMPLES: dict[str, tuple[str, str, dict]] = {
    "zendesk_ticket": ("zendesk", "Zendesk ticket object ({ticket})", {"ticket": {
        "id": 35436, "created_at": "2025-07-20T22:55:29Z", "updated_at": "2025-07-21T10:05:11Z",
        "via": {"channel": "web"}, "priority": "high", "status": "open", "type": "incident",
        "requester_id": 20978392, "assignee_id": 235323, "group_id": 98738, "tags": ["enterprise", "vip"],
        "subject": "Charged twice", "description": "I was charged twice for my subscription."}}),
    "zendesk_trigger": ("zendesk", "Zendesk trigger webhook with placeholder labels", {"ticket": {
        "id": "35439", "created_at": "2025-07-25T07:05Z", "updated_at": "2025-07-25T10:45Z", "status": "Open",
        "priority": "High", "via": "Web Form", "tags": "billing vip", "subject": "Invoice shows the wrong plan"}}),
    "zendesk_comment_added": ("zendesk", "Zendesk event webhook: a customer's public comment", {
        "type": "zen:event-type:ticket.comment_added", "id": "0e6a7f4c-2b1d-4c8e-9f30-5a6b7c8d9e01",
        "time": "2025-01-09T15:02:44.123456789Z", "subject": "zen:ticket:5160", "account_id": 12514403,
        "zendesk_event_version": "2022-11-06",
        "detail": {"id": "5160", "created_at": "2025-01-08T10:12:07Z", "updated_at": "2025-01-09T15:02:44Z",
                   "status": "OPEN", "priority": "HIGH", "requester_id": "8447388090500", "group_id": "8447320466430",
                   "via": {"channel": "email"}, "subject": "Damaged order"},
        "event": {"comment": {"id": "30064117810589", "body": "Third time I write: I want a refund now.",
                              "is_public": True, "author": {"id": "8447388090500", "is_staff": False}}}}),
    "zendesk_status_changed": ("zendesk", "Zendesk event webhook: status changed", {
        "type": "zen:event-type:ticket.status_changed", "id": "a8b9c1d2-3e4f-5a6b-7c8d-9e0f1a2b3c4d",
        "time": "2025-01-08T16:45:20.987654321Z", "subject": "zen:ticket:5158",
        "detail": {"id": "5158", "created_at": "2025-01-08T10:12:07Z", "status": "SOLVED", "priority": "HIGH",
                   "via": {"channel": "web"}},
        "event": {"current": "SOLVED", "previous": "OPEN"}}),
    "servicenow_raw": ("servicenow", "ServiceNow Table API, sysparm_display_value=false", {"result": {
        "number": "INC0010042", "sys_id": "9d385017c611228701d22104cc95c371", "opened_at": "2025-03-02 23:09:51",
        "sys_updated_on": "2025-03-10 14:00:00", "state": "2", "priority": "2", "contact_type": "email",
        "category": "billing", "escalation": "1", "reassignment_count": "1", "reopen_count": "0",
        "sys_mod_count": "6", "short_description": "Charged twice for March",
        "assignment_group": {"link": "https://dev12345.service-now.com/api/now/table/sys_user_group/287ebd7d",
                             "value": "287ebd7da9fe198100f92cc8d1d2154e"}}}),
    "servicenow_display": ("servicenow", "ServiceNow Table API, sysparm_display_value=true (user format and zone)",
                           {"result": [{
                               "number": "INC0010042", "opened_at": "2025-03-02 23:09:51",
                               "sys_updated_on": "2025-03-10 14:00:00", "state": "In Progress", "priority": "2 - High",
                               "contact_type": "Email", "category": "Billing", "escalation": "Moderate",
                               "assignment_group": {"display_value": "Billing Support", "link": "https://dev12345."
                                                    "service-now.com/api/now/table/sys_user_group/287ebd7d"}}]}),
    "servicenow_pairs": ("servicenow", "ServiceNow Table API, sysparm_display_value=all", {"result": {
        "number": {"display_value": "INC0010042", "value": "INC0010042"},
        "opened_at": {"display_value": "2025-03-02 23:09:51", "value": "2025-03-02 23:09:51"},
        "sys_updated_on": {"display_value": "2025-03-10 14:00:00", "value": "2025-03-10 14:00:00"},
        "state": {"display_value": "In Progress", "value": "2"},
        "priority": {"display_value": "2 - High", "value": "2"},
        "assignment_group": {"display_value": "Billing Support", "value": "287ebd7da9fe198100f92cc8d1d2154e",
                             "link": "https://dev12345.service-now.com/api/now/table/sys_user_group/287ebd7d"}}}),
    "freshdesk_ticket": ("freshdesk", "Freshdesk API v2 ticket", {
        "id": 20, "created_at": "2025-08-24T11:56:51Z", "updated_at": "2025-08-24T11:59:05Z", "status": 2,
        "priority": 1, "source": 2, "requester_id": 1, "subject": "Support needed..",
        "description_text": "Details about the issue...", "due_by": "2025-08-27T11:30:00Z", "is_escalated": False,
        "custom_fields": {}, "tags": []}),
    "freshdesk_webhook": ("freshdesk", "Freshdesk automation webhook ({freshdesk_webhook}, labels)", {
        "freshdesk_webhook": {"triggered_event": "{ticket_action:created}", "ticket_id": "11",
                              "ticket_status": "Open", "ticket_priority": "High", "ticket_source": "Email",
                              "ticket_tags": "billing, gold", "ticket_created_on": "2025-08-24 11:56:51 UTC",
                              "ticket_modified_on": "2025-08-24 12:10:00 UTC",
                              "ticket_due_by_time": "August 27 2025 at 11:30 AM UTC",
                              "ticket_subject": "Charged twice this month"}}),
    "freshdesk_webhook_flat": ("freshdesk", "Freshdesk automation webhook, flat keys", {
        "ticket_id": "12", "ticket_status": "Pending", "ticket_priority": "Medium", "ticket_source": "Portal",
        "ticket_created_on": "2025-08-24T11:56:00Z", "ticket_modified_on": "2025-08-24T14:10:00Z",
        "ticket_subject": "Order never arrived"}),
}


def integration_operation(ref, errors: dict) -> dict:
    """The OpenAPI operation of POST /v1/integrations/{system}."""
    return {
        "summary": "Score a ticket sent in Zendesk's, ServiceNow's or Freshdesk's own shapes",
        "description": (
            "The body is the vendor's payload as it sends it (see ZendeskPayload, ServiceNowPayload, "
            "FreshdeskPayload). Unknown values never refuse a ticket: they are scored with a warning naming the "
            "vendor's field; only a missing id, an unusable time or an update before creation is a 422, naming the "
            "vendor's field(s). One record -> one Score; several (a ServiceNow result list, Zendesk tickets) -> "
            "{results, errors} as a /v1/score batch. An event webhook that carries only what changed and no "
            "creation time is a 422 (partial_event) until the ticket store records it. " + ZENDESK_SIGNATURE),
        "operationId": "score_integration",
        "parameters": [{"name": "system", "in": "path", "required": True,
                        "schema": {"enum": list(adapters.SYSTEMS)}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"anyOf": [ref("ZendeskPayload"), ref("ServiceNowPayload"), ref("FreshdeskPayload")]},
            "examples": {name: {"summary": f"{system}: {summary}", "value": value}
                         for name, (system, summary, value) in EXAMPLES.items()}}}},
        "responses": {"200": {"description": "a Score, or ScoreBatch for a multi-record payload",
                              "content": {"application/json": {"schema": {"anyOf": [ref("Score"), ref("ScoreBatch")]}}}},
                      **errors,
                      "404": {"description": "no such integration",
                              "content": {"application/json": {"schema": ref("ErrorBody")}}}},
    }
