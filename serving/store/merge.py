"""How a canonical event (a full ticket or only what changed) merges onto a ticket's stored state.

Pure functions over plain dicts (times as ISO 8601 strings), used by the store for new events
and to replay a ticket's events in event-time order when a late one arrives. The rules
(docs: the store contract; the issue "live ticket state"):

- a full ticket (`partial` absent or false) sets every field it carries a value for; a field it
  leaves out or sends as null keeps the stored value (a sender that does not know the message
  counts must not erase what earlier events taught the store);
- a partial event sets only the fields it carries; an explicit null clears a field (not the
  counters, the ticket's creation time or its event time);
- `customer_message`: a new customer message: customer_messages += 1, and its text becomes
  last_customer_message; `agent_message`: a new agent reply: agent_messages += 1;
- a group change (from one group to another) is a reassignment: reassignment_count += 1;
- closed -> open (status leaves the closed statuses) is a reopening: reopen_count += 1;
- an escalation_level rise is an escalation; escalation_type is kept as sent;
- a counter the event carries explicitly wins over the derived increment.

`update_facts` keeps the ticket's as-of history facts exactly as features.history.summarize_tickets
defines them over the rows seen so far: entities and level from the first row that has them,
escalated = the highest level so far above the first, ended = since the start of the current
run of closed statuses.
"""

from __future__ import annotations

from features.schema import CANONICAL_COLUMNS, normalize_category

STATE_FIELDS = (*[c for c in CANONICAL_COLUMNS if c != "ticket_id"], "extra")
COUNTERS = ("reassignment_count", "reopen_count", "customer_messages", "agent_messages", "escalation_level")
NEVER_CLEARED = ("event_time", "created_at", *COUNTERS)
TEXT_FIELDS = ("subject", "description", "last_customer_message")
EVENT_TEXT_FIELDS = (*TEXT_FIELDS, "customer_message", "agent_message")
HISTORY_ENTITIES = ("customer_id", "agent_id", "group", "category")  # features.history.summarize_tickets
_NEVER_CLEARED = frozenset(NEVER_CLEARED)


def normal_status(value: object) -> str | None:
    """A status in the normal form training compares it in (features.schema.normalize_category)."""
    return normalize_category(value)


def is_closed(status: object, closed_statuses: frozenset[str]) -> bool:
    normal = normalize_category(status)
    return normal is not None and normal in closed_statuses


def merge_event(state: dict | None, event: dict, closed_statuses: frozenset[str]) -> dict:
    """The ticket's state after `event` (a new dict); `state` is None for a ticket not seen before."""
    old = state or {}
    new = dict(old)
    get = event.get
    if state is not None and event.keys() <= old.keys() and "last_customer_message_at" not in event \
            and None not in event.values():
        # Only fields the state already has, none null, no message (ingest's and most full events after
        # the first): the loop below would set each in place, which is what update() does.
        new.update(event)
    elif get("partial"):
        for name in STATE_FIELDS:
            if name in event:
                value = event[name]
                if value is not None or name not in _NEVER_CLEARED:
                    new[name] = value
    else:  # a full ticket: only the values it carries count
        for name in STATE_FIELDS:
            value = get(name)
            if value is not None:
                new[name] = value
    # A derived increment unless the event carries the counter explicitly (the explicit value wins).
    customer_message = get("customer_message")
    if customer_message is not None:
        if get("customer_messages") is None:
            new["customer_messages"] = int(old.get("customer_messages") or 0) + 1
        if "last_customer_message" not in event:
            new["last_customer_message"] = customer_message
    if get("agent_message") is not None and get("agent_messages") is None:
        new["agent_messages"] = int(old.get("agent_messages") or 0) + 1
    if state is not None:
        old_group, new_group = old.get("group"), new.get("group")
        if old_group is not None and new_group is not None and new_group != old_group \
                and get("reassignment_count") is None:
            new["reassignment_count"] = int(old.get("reassignment_count") or 0) + 1
        if is_closed(old.get("status"), closed_statuses) and new.get("status") is not None \
                and not is_closed(new["status"], closed_statuses) and get("reopen_count") is None:
            new["reopen_count"] = int(old.get("reopen_count") or 0) + 1
    if customer_message is not None or int(new.get("customer_messages") or 0) > int(old.get("customer_messages") or 0):
        # When the customer last wrote: the escalation matrix's min_hours_since_customer_message reads it.
        new["last_customer_message_at"] = new.get("event_time")
    new["ticket_id"] = event["ticket_id"]
    return new


def update_facts(facts: dict | None, state: dict, closed_statuses: frozenset[str]) -> dict:
    """The history facts after the row `state` (features.history.summarize_tickets, incrementally)."""
    facts = dict(facts) if facts else {"created_at": state.get("created_at"), "first": {},
                                       "first_level": int(state.get("escalation_level") or 0),
                                       "max_level": 0, "closed_since": None}
    first = facts["first"]
    if len(first) < len(HISTORY_ENTITIES):  # holds only entities already set: a full one never changes
        missing = [name for name in HISTORY_ENTITIES if first.get(name) is None and state.get(name) is not None]
        if missing:  # a new dict only when it changes (facts are never changed in place)
            first = dict(first)
            for name in missing:
                first[name] = str(state[name])
        facts["first"] = first
    facts["max_level"] = max(int(facts["max_level"]), int(state.get("escalation_level") or 0))
    if is_closed(state.get("status"), closed_statuses):
        facts["closed_since"] = facts["closed_since"] or state["event_time"]
    else:
        facts["closed_since"] = None
    return facts


def history_fields(facts: dict) -> dict:
    """The ticket's row of the history table: created_at, ended_at, escalated and its first entities."""
    first = facts["first"]
    return {
        "created_at": facts["created_at"],
        "ended_at": facts["closed_since"],
        "escalated": int(facts["max_level"]) > int(facts["first_level"]),
        "customer_id": first.get("customer_id"),
        "agent_id": first.get("agent_id"),
        "group": first.get("group"),
        "category": first.get("category"),
    }


MESSAGE_FIELDS = ("customer_message", "agent_message")


def drop_text(fields: dict) -> dict:
    """`fields` without ticket text (retention): ids, counters, times and codes stay. A message's text
    becomes "" rather than going: the event still says a message came, so a later replay of the
    ticket's events (an out-of-order arrival) counts it."""
    kept = {k: v for k, v in fields.items() if k not in EVENT_TEXT_FIELDS}
    return kept | {k: "" for k in MESSAGE_FIELDS if fields.get(k) is not None}
