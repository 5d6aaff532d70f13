"""Small hand-made event logs whose labels and aggregates can be worked out by hand."""

from __future__ import annotations

import pandas as pd


def make_ticket(ticket_id: str, created: str, updates: list[dict], **fields) -> list[dict]:
    """Rows of one ticket: the creation row plus one row per update dict (hours after creation)."""
    base = {
        "ticket_id": ticket_id,
        "created_at": pd.Timestamp(created, tz="UTC"),
        "channel": "email",
        "category": "billing",
        "subcategory": "refund",
        "priority": "normal",
        "customer_id": "C1",
        "customer_tier": "standard",
        "agent_id": "A1",
        "group": "billing_team",
        "status": "new",
        "subject": "Refund request",
        "description": "I would like a refund for my last invoice please",
        "last_customer_message": None,
        "reassignment_count": 0,
        "reopen_count": 0,
        "customer_messages": 1,
        "agent_messages": 0,
        "sla_due_at": pd.Timestamp(created, tz="UTC") + pd.Timedelta(hours=24),
        "escalation_level": 0,
        "escalation_type": None,
        "event_type": "created",
    } | fields
    rows = [base | {"event_time": base["created_at"]}]
    for update in updates:
        hours = update.pop("hours")
        row = rows[-1] | {"event_type": "agent_reply", "status": "open"} | update
        row["event_time"] = base["created_at"] + pd.Timedelta(hours=hours)
        rows.append(row)
    return rows


def make_log(*tickets: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for ticket in tickets for row in ticket])
