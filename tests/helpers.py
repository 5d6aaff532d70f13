"""Small hand-made event logs whose labels and aggregates can be worked out by hand, and a
small export in the ServiceNow incident audit log's own shape."""

from __future__ import annotations

import numpy as np
import pandas as pd

SERVICENOW_STATES = ["New", "Active", "Awaiting User Info", "Active", "Resolved", "Closed"]


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


def _time(moment: pd.Timestamp) -> str:
    return f"{moment.day}/{moment.month}/{moment.year} {moment:%H:%M}"


def make_servicenow_export(n_incidents: int = 900, seed: int = 5) -> pd.DataFrame:
    """Incidents of 4-6 updates in the UCI log's columns; who opened it, where and the symptom
    shift the chance of two more reassignments (the functional label)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2016-03-01 08:00")
    rows = []
    for i in range(n_incidents):
        opened = start + pd.Timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
        opener, location, symptom = int(rng.integers(0, 6)), int(rng.integers(0, 5)), int(rng.integers(0, 8))
        risky = rng.random() < 0.15 + 0.1 * (opener < 2) + 0.1 * (location == 0) + 0.1 * (symptom < 3)
        n_updates = int(rng.integers(4, 7))
        states = SERVICENOW_STATES[:n_updates - 2] + SERVICENOW_STATES[-2:]
        changes_symptom = rng.random() < 0.6   # else the audit calls it back-filled
        resolved = opened + pd.Timedelta(hours=float(rng.choice([6, 60, 300])))
        # First logged when opened: "known from created_at" (features.history) and the first row coincide.
        reassignments, time = 0, opened
        for k, state in enumerate(states):
            if k in (1, 2, 3) and k < n_updates - 2 and (k == 1 or risky):
                reassignments += 1
            impact = 1 + int(rng.random() < 0.3) if k < 2 else 2
            urgency = 1 + int(rng.random() < 0.5) if k < 3 else 3
            rows.append({
                "number": f"INC{i:07d}", "incident_state": state, "active": str(k < n_updates - 1).lower(),
                "reassignment_count": reassignments, "reopen_count": 0, "sys_mod_count": k,
                "made_sla": "true", "caller_id": f"Caller {int(rng.integers(0, 300))}" if k == 0 else None,
                "opened_by": f"Opened by  {opener}", "opened_at": _time(opened),
                "sys_created_by": f"Created by {opener % 3}", "sys_created_at": _time(opened),
                "sys_updated_by": f"Updated by {int(rng.integers(0, 4))}", "sys_updated_at": _time(time),
                "contact_type": "Phone" if i % 4 else "Email", "location": f"Location {location}",
                "category": f"Category {i % 5}", "subcategory": f"Subcategory {i % 7}",
                "u_symptom": f"Symptom {symptom + (k >= 2 and changes_symptom)}", "cmdb_ci": None,
                "impact": f"{impact} - {'High' if impact == 1 else 'Medium'}", "urgency": f"{urgency} - {['High', 'Medium', 'Low'][urgency - 1]}",
                "priority": "2 - High" if impact == 1 else "3 - Moderate", "assignment_group": f"Group {reassignments % 4}",
                "assigned_to": None, "knowledge": "false", "u_priority_confirmation": "false",
                "notify": "Do Not Notify", "problem_id": None, "rfc": None, "vendor": None, "caused_by": None,
                "closed_code": "code 5", "resolved_by": "Resolved by 1",
                "resolved_at": _time(resolved), "closed_at": _time(resolved + pd.Timedelta(days=5)),
            })
            time += pd.Timedelta(minutes=int(rng.integers(30, 600)))
        # The caller is known from the first update on, as in the real export.
        for row in rows[-n_updates:]:
            row["caller_id"] = rows[-n_updates]["caller_id"]
    return pd.DataFrame(rows)
