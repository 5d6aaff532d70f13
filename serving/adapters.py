"""Zendesk, ServiceNow and Freshdesk payloads mapped to the canonical ticket.

Each adapter returns a plain dict that the canonical `Ticket` model then validates, or raises
`PayloadError` listing every field it cannot map (unknown enum values, missing required fields).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any


class PayloadError(ValueError):
    """Fields of a system's payload that cannot be mapped; each is (field, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


def _require(payload: dict, keys: tuple[str, ...], prefix: str, problems: list) -> None:
    for key in keys:
        if payload.get(key) in (None, ""):
            problems.append((f"{prefix}{key}", "required field is missing"))


def _lookup(table: dict, value: Any, field: str, problems: list) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append((field, f"expected a string or a number, got {type(value).__name__}"))
        return None
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, str) and key.isdecimal():
        key = int(key)
    if key not in table:
        problems.append((field, f"unknown value {value!r}; expected one of {', '.join(map(str, table))}"))
        return None
    return table[key]


def _list(value: Any) -> list:
    """A list field (tags, custom fields); anything else counts as absent."""
    return value if isinstance(value, list) else []


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    if isinstance(value, dict):  # ServiceNow reference {"value": sys_id, "link": ...} or {"display_value": ...}
        value = value.get("value") or value.get("display_value")
    return None if value in (None, "") else str(value)


# --- Zendesk -------------------------------------------------------------------------------
# Via channel by name (ticket API, event webhooks) or by via-type number (Zendesk's "via types").
ZENDESK_CHANNELS: dict[Any, str] = {
    "web": "web", "web_form": "web", "web_service": "web", "api": "web", "help_center": "web",
    "email": "email", "mail": "email",
    "chat": "chat", "native_messaging": "chat", "messaging": "chat",
    "voice": "phone", "phone": "phone", "phone_call_inbound": "phone", "phone_call_outbound": "phone",
    "voicemail": "phone",
    "twitter": "social", "facebook": "social", "instagram_dm": "social", "whatsapp": "social",
    0: "web", 4: "email", 5: "web", 29: "chat", 30: "social", 33: "phone", 34: "phone", 35: "phone",
    38: "social", 41: "social",
}
ZENDESK_PRIORITIES = {"low": "low", "normal": "normal", "high": "high", "urgent": "urgent"}
ZENDESK_STATUSES = {"new": "new", "open": "open", "pending": "pending", "hold": "on_hold",
                    "solved": "resolved", "closed": "closed"}
ZENDESK_TIERS = ("vip", "gold", "standard")


def map_zendesk(payload: dict) -> dict:
    """A ticket object (`{"ticket": {...}}` or bare) or an event-webhook body (`{"detail": {...}}`)."""
    if not isinstance(payload, dict):
        raise PayloadError([("(body)", "expected a JSON object")])
    event_time = None
    if isinstance(payload.get("detail"), dict):  # event webhook: zen:event-type:ticket.*
        ticket, prefix, event_time = payload["detail"], "detail.", payload.get("time")
    elif isinstance(payload.get("ticket"), dict):
        ticket, prefix = payload["ticket"], "ticket."
    else:
        ticket, prefix = payload, ""
    problems: list[tuple[str, str]] = []
    _require(ticket, ("id", "created_at"), prefix, problems)
    via = ticket.get("via") or {}
    channel = _lookup(ZENDESK_CHANNELS, via.get("channel") if isinstance(via, dict) else None,
                      f"{prefix}via.channel", problems)
    priority = _lookup(ZENDESK_PRIORITIES, ticket.get("priority"), f"{prefix}priority", problems)
    status = _lookup(ZENDESK_STATUSES, ticket.get("status"), f"{prefix}status", problems)
    if problems:
        raise PayloadError(problems)
    tags = [str(t).lower() for t in _list(ticket.get("tags"))]
    tier = next((t for t in ZENDESK_TIERS if t in tags), None)
    fields = {str(f.get("id")): f.get("value") for f in _list(ticket.get("custom_fields")) if isinstance(f, dict)}
    return {
        "ticket_id": _id(ticket.get("id")),
        "created_at": ticket.get("created_at"),
        "event_time": event_time or ticket.get("updated_at") or ticket.get("created_at"),
        "channel": channel,
        "priority": priority,
        "status": status,
        "category": fields.get("category") or (ticket.get("type") or None),
        "customer_id": _id(ticket.get("requester_id")),
        "customer_tier": tier,
        "agent_id": _id(ticket.get("assignee_id")),
        "group": _id(ticket.get("group_id")),
        "subject": ticket.get("subject") or ticket.get("raw_subject"),
        "description": ticket.get("description"),
        "sla_due_at": ticket.get("due_at"),
    }


def verify_zendesk_signature(secret: str, body: bytes, signature: str | None, timestamp: str | None,
                             window_seconds: int, now: float | None = None) -> str | None:
    """None when valid; else why not. Signature = base64(HMAC-SHA256(secret, timestamp + body))."""
    if not signature or not timestamp:
        return "missing X-Zendesk-Webhook-Signature or X-Zendesk-Webhook-Signature-Timestamp"
    expected = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode()):
        return "signature does not match"
    try:
        from datetime import datetime

        sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "unparseable X-Zendesk-Webhook-Signature-Timestamp"
    if abs((now if now is not None else time.time()) - sent) > window_seconds:
        return "timestamp outside the replay window"
    return None


class ReplayGuard:
    """Remembers the Zendesk signatures already accepted within the replay window, so each is used once.

    With a folder (the gunicorn workers' shared one) the memory is shared by all workers: one
    file per signature, created with O_EXCL, so a replay to another worker is refused too.
    """

    def __init__(self, window_seconds: int, state_dir: Path | None = None):
        self.window_seconds = window_seconds
        self.state_dir = state_dir
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)

    def first_use(self, signature: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        key = hashlib.sha256(signature.encode()).hexdigest()
        with self._lock:
            self._forget_older_than(now - 2 * self.window_seconds)
            if self.state_dir is None:
                if key in self._seen:
                    return False
                self._seen[key] = now
                return True
            try:
                os.close(os.open(self.state_dir / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False
            self._seen[key] = now
            return True

    def release(self, signature: str) -> None:
        """Forget a signature whose request failed, so the sender's retry of it is accepted."""
        key = hashlib.sha256(signature.encode()).hexdigest()
        with self._lock:
            self._seen.pop(key, None)
            if self.state_dir is not None:
                (self.state_dir / key).unlink(missing_ok=True)

    def _forget_older_than(self, cutoff: float) -> None:
        for key in [k for k, t in self._seen.items() if t < cutoff]:
            del self._seen[key]
            if self.state_dir is not None:
                (self.state_dir / key).unlink(missing_ok=True)


# --- ServiceNow ----------------------------------------------------------------------------
SERVICENOW_PRIORITIES = {1: "urgent", 2: "high", 3: "normal", 4: "low", 5: "low",
                         "critical": "urgent", "high": "high", "moderate": "normal", "low": "low",
                         "planning": "low"}
# The older "Awaiting ..." states are those of the incident audit-log export the servicenow
# mapping file reads (features/sources/mappings/servicenow.yaml): both name them alike.
SERVICENOW_STATES = {1: "new", 2: "open", 3: "on_hold", 6: "resolved", 7: "closed", 8: "closed",
                     "new": "new", "in progress": "open", "active": "open", "on hold": "on_hold",
                     "awaiting user info": "pending", "awaiting vendor": "awaiting_vendor",
                     "awaiting problem": "awaiting_problem", "awaiting evidence": "awaiting_evidence",
                     "resolved": "resolved", "closed": "closed", "canceled": "closed", "cancelled": "closed"}
SERVICENOW_CONTACT_TYPES = {"phone": "phone", "email": "email", "chat": "chat", "virtual_agent": "chat",
                            "self-service": "web", "web": "web", "walk-in": "phone", "social": "social",
                            "virtual agent": "chat", "self service": "web", "ivr": "phone",
                            "direct opening": "web"}
# Impact and urgency as the export writes them ("2 - Medium"); raw API values are the numbers.
SERVICENOW_LEVEL_LABELS = {1: "1 - High", 2: "2 - Medium", 3: "3 - Low"}
SERVICENOW_LABELLED = ("impact", "urgency")
SERVICENOW_LEVELS = {0: 0, 1: 1, 2: 2, 3: 3, "normal": 0, "moderate": 1, "high": 2, "overdue": 3}
# Display values like "1 - Critical"; the spaces keep ISO dates ("2025-03-02 ...") out.
_NUMBER_PREFIX = re.compile(r"^\s*(\d+)\s+-\s+(.+)$")


def _sn_value(record: dict, key: str) -> Any:
    value = record.get(key)
    if isinstance(value, dict):
        value = value.get("display_value", value.get("value"))
    if isinstance(value, str):
        match = _NUMBER_PREFIX.match(value)
        if match:
            return int(match.group(1))
        value = value.strip()
    return None if value == "" else value


def _sn_count(record: dict, key: str, problems: list) -> int | None:
    value = _sn_value(record, key)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.append((key, f"expected a whole number, got {value!r}"))
        return None


@cache
def servicenow_extra_columns() -> dict[str, str]:
    """The servicenow mapping's `extra:` section (log column -> incident field), read on first use,
    so a served model trained on that export sees the same coded fields (opened_by, location, ...)."""
    from features.sources.mapping import load_mapping

    return dict(load_mapping("servicenow").extra)


def _sn_display(record: dict, key: str) -> str | None:
    """A coded field as the export writes it: a reference's display name, "2 - Medium" for impact."""
    value = record.get(key)
    if isinstance(value, dict):
        value = value.get("display_value") or value.get("value")
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    if key in SERVICENOW_LABELLED and text.isdecimal():
        return SERVICENOW_LEVEL_LABELS.get(int(text), text)
    return text or None


def map_servicenow(payload: dict) -> dict:
    """An incident record (raw or display values, `{value, link}` references), bare or in `result`."""
    if not isinstance(payload, dict):
        raise PayloadError([("(body)", "expected a JSON object")])
    record = payload.get("result", payload)
    if isinstance(record, list):
        if len(record) != 1:
            raise PayloadError([("result", "expected exactly one incident record")])
        record = record[0]
    if not isinstance(record, dict):
        raise PayloadError([("result", "expected an incident record (a JSON object)")])
    problems: list[tuple[str, str]] = []
    if not (_id(record.get("number")) or _id(record.get("sys_id"))):
        problems.append(("number", "required field is missing (number or sys_id)"))
    _require(record, ("opened_at",), "", problems)
    priority = _lookup(SERVICENOW_PRIORITIES, _sn_value(record, "priority"), "priority", problems)
    state_key = "state" if record.get("state") not in (None, "") else "incident_state"
    status = _lookup(SERVICENOW_STATES, _sn_value(record, state_key), state_key, problems)
    channel = _lookup(SERVICENOW_CONTACT_TYPES, _sn_value(record, "contact_type"), "contact_type", problems)
    level = _lookup(SERVICENOW_LEVELS, _sn_value(record, "escalation"), "escalation", problems)
    counts = {c: _sn_count(record, c, problems) for c in ("reassignment_count", "reopen_count")}
    # The mapping counts updates so far (sys_mod_count) as agent_messages.
    counts["agent_messages"] = _sn_count(record, "sys_mod_count", problems)
    if problems:
        raise PayloadError(problems)
    extra = {name: value for name, source in servicenow_extra_columns().items()
             if (value := _sn_display(record, source)) is not None}
    return {
        "ticket_id": _id(record.get("number")) or _id(record.get("sys_id")),
        "created_at": _sn_value(record, "opened_at"),
        "event_time": _sn_value(record, "sys_updated_on") or _sn_value(record, "opened_at"),
        "channel": channel,
        "priority": priority,
        "status": status,
        "category": _sn_value(record, "category"),
        "subcategory": _sn_value(record, "subcategory"),
        "customer_id": _id(record.get("caller_id")),
        "agent_id": _id(record.get("assigned_to")),
        "group": _id(record.get("assignment_group")),
        "subject": _sn_value(record, "short_description"),
        "description": _sn_value(record, "description"),
        "escalation_level": level,
        "sla_due_at": _sn_value(record, "sla_due"),
        **counts,
        **({"extra": extra} if extra else {}),
    }


# --- Freshdesk -----------------------------------------------------------------------------
FRESHDESK_PRIORITIES = {1: "low", 2: "normal", 3: "high", 4: "urgent"}
FRESHDESK_STATUSES = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
FRESHDESK_SOURCES = {1: "email", 2: "web", 3: "phone", 4: "web", 5: "social", 6: "social", 7: "chat",
                     8: "chat", 9: "web", 10: "email"}


def map_freshdesk(payload: dict) -> dict:
    """A ticket as the Freshdesk API returns it (integer codes for priority, status and source)."""
    if not isinstance(payload, dict):
        raise PayloadError([("(body)", "expected a JSON object")])
    ticket = payload.get("ticket", payload) if isinstance(payload.get("ticket"), dict) else payload
    problems: list[tuple[str, str]] = []
    _require(ticket, ("id", "created_at"), "", problems)
    priority = _lookup(FRESHDESK_PRIORITIES, ticket.get("priority"), "priority", problems)
    status = _lookup(FRESHDESK_STATUSES, ticket.get("status"), "status", problems)
    channel = _lookup(FRESHDESK_SOURCES, ticket.get("source"), "source", problems)
    if problems:
        raise PayloadError(problems)
    custom = _object(ticket.get("custom_fields"))
    return {
        "ticket_id": _id(ticket.get("id")),
        "created_at": ticket.get("created_at"),
        "event_time": ticket.get("updated_at") or ticket.get("created_at"),
        "channel": channel,
        "priority": priority,
        "status": status,
        "category": custom.get("cf_category") or ticket.get("type"),
        "customer_id": _id(ticket.get("requester_id")),
        "agent_id": _id(ticket.get("responder_id")),
        "group": _id(ticket.get("group_id")),
        "subject": ticket.get("subject"),
        "description": ticket.get("description_text") or ticket.get("description"),
        "sla_due_at": ticket.get("due_by"),
        "escalation_level": int(bool(ticket["is_escalated"])) if "is_escalated" in ticket else None,
    }


ADAPTERS = {"zendesk": map_zendesk, "servicenow": map_servicenow, "freshdesk": map_freshdesk}
