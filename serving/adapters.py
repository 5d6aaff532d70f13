"""Zendesk, ServiceNow and Freshdesk payloads, in every shape they send, mapped to canonical events.

`adapt_payload(system, body, headers, settings)` is the one entry: it returns the canonical
events a payload holds (full tickets, or partial events carrying only what changed: the
contract in /work/notes/store-contract.md, "Partial canonical events") and the warnings about
it. Unknown vendor values never refuse a ticket: they pass on in normal form (a value the
model was not trained on scores as "other"; an unknown priority as "not set") with a warning
naming the vendor's field. Only a missing id or an unusable time is a `PayloadError` (422),
again naming the vendor's field.

Vendor formats, from each vendor's documentation:
- Zendesk: the Tickets API ticket object (bare, `{"ticket": ...}` with sideloads, `{"tickets": [...]}`),
  trigger webhooks with placeholder labels ("Open", "Web Form"), and event webhooks
  (`zen:event-type:ticket.*`: developer.zendesk.com/api-reference/webhooks/event-types/ticket-events;
  `detail` = the ticket now, `event` = what changed, `comment` with `author.is_staff`).
- ServiceNow: Table API incident records (developer docs "Table API"; `sysparm_display_value`
  false = raw codes, sys_id references and UTC times as yyyy-MM-dd HH:mm:ss; true = labels,
  names and times in the API user's date format and time zone; all = `{value, display_value}` pairs).
- Freshdesk: the API v2 ticket object (developers.freshdesk.com/api/#tickets: integer status,
  priority and source) and automation-rule webhooks ("Trigger webhook": `{"freshdesk_webhook":
  {"ticket_id": ...}}` or flat `ticket_*` keys, placeholder labels such as "Open" / "High" /
  "Email" and dates such as "August 27 2025 at 11:30 AM IST").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from features.schema import normalize_category
from features.settings import Settings
from serving.integration_mapping import IntegrationMapping, Source, VendorMapping, load_integration_mapping
from serving.schemas import MAX_YEAR, MIN_YEAR

SYSTEMS = ("zendesk", "servicenow", "freshdesk")
# Keys of a canonical event that are not ticket fields (the store's merge reads them).
EVENT_KEYS = ("source_event_id", "partial", "customer_message", "agent_message")
_SHOWN_CHARS = 60


class PayloadError(ValueError):
    """Fields of a system's payload that cannot be mapped; each is (vendor field, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


@dataclass
class AdaptedPayload:
    """What a vendor payload holds, as canonical events.

    events:   canonical events in payload order: a full ticket (no `partial` key) or a partial
              event (`partial: True`: only what changed, plus `customer_message` /
              `agent_message` / `source_event_id`); keys without a value are left out.
    warnings: [{field, value, message}] for the whole payload (vendor field names).
    sources:  per event, canonical field -> the vendor field it comes from (or would), for
              errors that name the vendor's field.
    event_warnings: per event, its share of `warnings`.
    positions: per event, the index of its record in the payload.
    errors:   [{index, ticket_id, field, message}] for records of a multi-record payload that
              could not be mapped (a single record raises PayloadError instead).
    """

    events: list[dict]
    warnings: list[dict]
    sources: list[dict[str, str]] = field(default_factory=list)
    event_warnings: list[list[dict]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


@dataclass
class _Context:
    settings: Settings
    mapping: VendorMapping
    headers: Mapping[str, str]
    received_at: datetime


class _Record:
    """One vendor record being mapped: its problems (422), warnings and field sources."""

    def __init__(self, vendor: str, prefix: str = ""):
        self.vendor, self.prefix = vendor, prefix
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[dict] = []
        self.sources: dict[str, str] = {}

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def problem(self, key: str, message: str) -> None:
        self.problems.append((self.name(key), message))

    def warn(self, key: str, value: Any, message: str) -> None:
        self.warnings.append({"field": self.name(key), "value": _shown(value), "message": message})


def _shown(value: Any) -> Any:
    """A vendor value as a warning shows it: scalars as sent (long text cut), structures by type."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    return f"({type(value).__name__})"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _id(value: Any) -> str | None:
    """An id as text; numbers lose a trailing .0; blanks and structures are absent."""
    if isinstance(value, dict):
        value = value.get("value") or value.get("display_value") or value.get("id")
    if _blank(value) or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def _flag(record: _Record, key: str, value: Any, missing: bool | None, unknown: bool | None) -> bool | None:
    """A vendor's true/false: JSON booleans, 0/1, and "true"/"false"/"1"/"0"/"yes"/"no" as text (any
    case). Missing (null) -> `missing`; anything else -> `unknown`, with a warning naming the field."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    shown = "not set" if unknown is None else str(unknown).lower()
    record.warn(key, _shown(value) if not isinstance(value, str) else "(text)", f"expected true or false; read as {shown}")
    return unknown


def _text(value: Any) -> str | None:
    if _blank(value) or not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    return str(value).strip()


_TAGS = re.compile(r"<[^>]*>")


def _plain_text(value: Any) -> str | None:
    """HTML (Freshdesk's `description`, placeholder renderings) as the text a reader sees."""
    text = _text(value)
    if text is None or "<" not in text:
        return text
    return " ".join(html.unescape(_TAGS.sub(" ", text)).split()) or None


def _code(value: Any) -> int | str | None:
    """A vendor value as a table key: an integer for whole numbers ("2", 2.0), else its normal form."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if float(value).is_integer() else str(value)
    text = str(value).strip()
    if text.isdecimal():
        return int(text)
    return normalize_category(text)


def _lookup(record: _Record, key: str, value: Any, table: Mapping[Any, str], what: str,
            unknown: str = "pass") -> str | None:
    """The canonical value of a vendor code or label; an unknown one passes on in normal form
    (unknown="pass") or is left not set (unknown="unset"), with a warning either way."""
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        record.warn(key, value, f"expected a string or a number for the {what}; left not set")
        return None
    code = _code(value)
    if code is None:
        return None
    if code in table:
        return table[code]
    if unknown == "unset":
        record.warn(key, value, f"unknown {record.vendor} {what} {_shown(value)!r}; scored as 'not set'")
        return None
    passed = normalize_category(value)
    record.warn(key, value, f"unknown {record.vendor} {what} {_shown(value)!r}; passed on as {passed!r} "
                            "(a value the model was not trained on scores as 'other')")
    return passed


# --- times ---------------------------------------------------------------------------------
_JAVA_TOKENS = re.compile(r"yyyy|yy|MMMM|MMM|MM|dd|HH|hh|mm|ss|a")
_JAVA_TO_STRPTIME = {"yyyy": "%Y", "yy": "%y", "MMMM": "%B", "MMM": "%b", "MM": "%m", "dd": "%d", "HH": "%H",
                     "hh": "%I", "mm": "%M", "ss": "%S", "a": "%p"}


@lru_cache(maxsize=64)
def strptime_format(pattern: str) -> str:
    """A date format in ServiceNow's (Java) notation, "dd/MM/yyyy HH:mm:ss", as a strptime format;
    a pattern with % is taken as strptime's own."""
    if "%" in pattern:
        return pattern
    return _JAVA_TOKENS.sub(lambda m: _JAVA_TO_STRPTIME[m.group(0)], pattern)


def _parse_time(record: _Record, key: str, value: Any, formats: tuple[str, ...] = (),
                zone: tzinfo = UTC, iso: bool = True) -> str | None:
    """A vendor time as an ISO 8601 UTC string: the first strptime format of `formats` that fits,
    else ISO 8601; a time without an offset is in `zone`. Unusable -> a problem naming `key`."""
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        record.problem(key, f"expected a time as text, got {type(value).__name__}")
        return None
    text = value.strip()
    moment = None
    for fmt in formats:
        try:
            moment = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    if moment is None and iso:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
    if moment is None:
        expected = " or ".join([*(f"'{f}'" for f in formats), *(["ISO 8601"] if iso else [])])
        record.problem(key, f"unparseable time {_shown(text)!r}; expected {expected}")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        record.problem(key, f"time {_shown(text)!r} is outside the supported years {MIN_YEAR}..{MAX_YEAR}")
        return None
    return moment.astimezone(UTC).isoformat()


def _check_order(record: _Record, event: dict) -> None:
    """An update before the ticket's creation is a problem naming both vendor fields."""
    created, updated = event.get("created_at"), event.get("event_time")
    if created and updated and datetime.fromisoformat(updated) < datetime.fromisoformat(created):
        updated_name, created_name = record.sources["event_time"], record.sources["created_at"]
        record.problems.append((updated_name, f"{updated_name} ({updated}) is before {created_name} ({created}): "
                                              "an update cannot precede the ticket's creation"))


def _finish(event: dict) -> dict:
    """The event without empty keys."""
    return {k: v for k, v in event.items() if v is not None and v != {}}


# --- the integration mapping file ----------------------------------------------------------
def _tags_of(values: Any) -> list[str]:
    if isinstance(values, str):  # placeholders render tags as "a, b" (Freshdesk) or "a b" (Zendesk)
        values = re.split(r"[,\s]+", values)
    if not isinstance(values, list):
        return []
    return [str(t).strip().lower() for t in values if isinstance(t, str | int) and str(t).strip()]


def _list(value: Any) -> list:
    """A list field (tags, custom fields, sideloads); anything else counts as absent."""
    return value if isinstance(value, list) else []


def _path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


@dataclass
class _View:
    """How the integration mapping's sources read one vendor record."""

    field: Callable[[str], Any]
    custom_field: Callable[[str], Any]
    tags: Callable[[], list[str]]
    organization_field: Callable[[str], Any] = lambda name: None


def _read_source(view: _View, source: Source) -> Any:
    kind = source.kind
    if kind == "field":
        return view.field(source.field)
    if kind == "custom_field":
        return view.custom_field(str(source.custom_field))
    if kind == "organization_field":
        return view.organization_field(source.organization_field)
    tags = view.tags()
    if kind == "tags":
        wanted = [t.lower() for t in source.tags]
        return next((t for t in wanted if t in tags), None)
    prefix = source.tag_prefix.lower()
    return next((t[len(prefix):] for t in tags if t.startswith(prefix) and len(t) > len(prefix)), None)


def _mapped_fields(record: _Record, view: _View, mapping: VendorMapping) -> dict[str, Any]:
    """Canonical fields the mapping file names: the first source with a value, translated by `values`."""
    out: dict[str, Any] = {}
    for name, sources in mapping.fields.items():
        for source in sources:
            value = _read_source(view, source)
            if isinstance(value, dict):  # a ServiceNow pair or reference
                value = value.get("display_value") or value.get("value")
            if isinstance(value, list):  # a multi-select custom field: its first choice
                value = value[0] if value else None
            if not _blank(value) and not isinstance(value, bool) and isinstance(value, str | int | float):
                translations = mapping.values.get(name, {})
                value = translations.get(str(value), translations.get(str(value).strip().lower(), value))
                out[name] = str(value).strip()
                record.sources[name] = record.name(source.describe())
                break
        else:
            out[name] = None
    return out


def load_mapping_for(settings: Settings) -> IntegrationMapping:
    return load_integration_mapping(settings.resolved_integration_mapping_path)


# --- Zendesk -------------------------------------------------------------------------------
# Via channel by name (ticket API, event webhooks, trigger placeholders) or by via-type number.
ZENDESK_CHANNELS: dict[Any, str] = {
    "web": "web", "web_form": "web", "web_service": "web", "api": "web", "help_center": "web", "helpcenter": "web",
    "web_widget": "web",
    "email": "email", "mail": "email",
    "chat": "chat", "native_messaging": "chat", "messaging": "chat", "chat_transcript": "chat",
    "voice": "phone", "phone": "phone", "phone_call_inbound": "phone", "phone_call_outbound": "phone",
    "voicemail": "phone", "api_phone_call_inbound": "phone", "api_phone_call_outbound": "phone",
    "api_voicemail": "phone",
    "twitter": "social", "twitter_dm": "social", "facebook": "social", "facebook_message": "social",
    "facebook_post": "social", "instagram_dm": "social", "whatsapp": "social",
    0: "web", 4: "email", 5: "web", 29: "chat", 30: "social", 33: "phone", 34: "phone", 35: "phone",
    38: "social", 41: "social",
}
ZENDESK_PRIORITIES = {"low": "low", "normal": "normal", "high": "high", "urgent": "urgent"}
ZENDESK_STATUSES = {"new": "new", "open": "open", "pending": "pending", "hold": "on_hold", "on_hold": "on_hold",
                    "solved": "resolved", "closed": "closed"}
ZENDESK_TICKET_EVENT = "zen:event-type:ticket."
# What an event type says happened, in the demo log's event_type words.
ZENDESK_EVENT_TYPES = {"created": "created", "priority_changed": "priority_changed",
                       "group_assignment_changed": "reassigned"}
_CLOSED = ("resolved", "closed")


def _zendesk_view(ticket: dict, body: dict) -> _View:
    fields = {str(f.get("id")): f.get("value") for f in (_list(ticket.get("custom_fields")) or _list(ticket.get("fields")))
              if isinstance(f, dict)}

    def organization_field(name: str) -> Any:
        org = ticket.get("organization") if isinstance(ticket.get("organization"), dict) else None
        if org is None:  # sideloaded: GET /api/v2/tickets/{id}?include=organizations
            org_id = _id(ticket.get("organization_id"))
            org = next((o for o in _list(body.get("organizations")) if isinstance(o, dict)
                        and _id(o.get("id")) == org_id), None)
        if org is None:
            return None
        values = org.get("organization_fields") or org.get("custom_fields") or {}
        return values.get(name) if isinstance(values, dict) else None

    return _View(field=lambda p: _path(ticket, p), custom_field=fields.get,
                 tags=lambda: _tags_of(ticket.get("tags")), organization_field=organization_field)


def _zendesk_fields(record: _Record, ticket: dict, body: dict, ctx: _Context) -> dict:
    """The canonical fields a Zendesk ticket object (or an event's `detail`) carries."""
    mapped = _mapped_fields(record, _zendesk_view(ticket, body), ctx.mapping)
    via = ticket.get("via")
    channel_value = via.get("channel") if isinstance(via, dict) else via
    record.sources.setdefault("channel", record.name("via.channel"))
    channel = mapped.pop("channel", None) or _lookup(record, "via.channel", channel_value, ZENDESK_CHANNELS,
                                                     "via.channel")
    event = {
        "ticket_id": _id(ticket.get("id")),
        "channel": channel,
        "priority": _lookup(record, "priority", ticket.get("priority"), ZENDESK_PRIORITIES, "priority", "unset"),
        "status": _lookup(record, "status", ticket.get("status"), ZENDESK_STATUSES, "status"),
        "category": None,
        "customer_id": _id(ticket.get("requester_id")),
        "agent_id": _id(ticket.get("assignee_id")),
        "group": _id(ticket.get("group_id")),
        "subject": _text(ticket.get("subject")) or _text(ticket.get("raw_subject")),
        "description": _text(ticket.get("description")),
        "sla_due_at": _parse_time(record, "due_at", ticket.get("due_at")),
    }
    for name, source in (("priority", "priority"), ("status", "status"), ("customer_id", "requester_id"),
                         ("agent_id", "assignee_id"), ("group", "group_id"), ("sla_due_at", "due_at")):
        record.sources.setdefault(name, record.name(source))
    event.update({k: v for k, v in mapped.items() if v is not None or k not in event})
    return event


def _adapt_zendesk_ticket(record: _Record, ticket: dict, body: dict, ctx: _Context) -> dict:
    event = _zendesk_fields(record, ticket, body, ctx)
    if event["ticket_id"] is None:
        record.problem("id", "required field is missing")
    record.sources |= {"created_at": record.name("created_at"), "event_time": record.name("updated_at")}
    created = _parse_time(record, "created_at", ticket.get("created_at"))
    updated = _parse_time(record, "updated_at", ticket.get("updated_at"))
    if _blank(ticket.get("created_at")):
        record.problem("created_at", "required field is missing")
    event |= {"created_at": created, "event_time": updated or created}
    if updated is None:
        record.sources["event_time"] = record.name("created_at")
    invocation = ctx.headers.get("X-Zendesk-Webhook-Invocation-Id")
    event["source_event_id"] = _text(invocation)
    _check_order(record, event)
    return event


def _adapt_zendesk_event(record: _Record, body: dict, ctx: _Context) -> dict:
    """An event webhook: `detail` is the ticket now (created_at included), `event` what changed."""
    detail = body["detail"]
    kind = str(body.get("type", ""))[len(ZENDESK_TICKET_EVENT):]
    change = body.get("event") if isinstance(body.get("event"), dict) else {}
    detail_record = _Record(record.vendor, "detail.")
    event = _zendesk_fields(detail_record, detail, body, ctx)
    if event["ticket_id"] is None:  # the subject names it too: "zen:ticket:5158"
        event["ticket_id"] = _id(str(body.get("subject", "")).rpartition(":")[2] or None)
    if event["ticket_id"] is None:
        detail_record.problem("id", "required field is missing")
    detail_record.sources["created_at"] = "detail.created_at"
    event["created_at"] = _parse_time(detail_record, "created_at", detail.get("created_at"))
    detail_record.sources["event_time"] = "time"
    event["event_time"] = _parse_time(record, "time", body.get("time"))
    if event["event_time"] is None and _blank(body.get("time")):
        detail_record.sources["event_time"] = "detail.updated_at"
        event["event_time"] = _parse_time(detail_record, "updated_at", detail.get("updated_at"))
        if event["event_time"] is None and _blank(detail.get("updated_at")):
            record.problem("time", "required field is missing (and detail.updated_at too)")
    event["event_type"] = ZENDESK_EVENT_TYPES.get(kind)
    current = change.get("current")
    if isinstance(current, dict):
        current = current.get("id", current.get("value"))
    if kind == "comment_added":
        comment = change.get("comment")
        if not isinstance(comment, dict):
            where, sent = (("event.comment", comment) if isinstance(body.get("event"), dict)
                           else ("event", body.get("event")))
            record.warn(where, f"({type(sent).__name__})",
                        "expected an object with the comment (body, is_public, author); the comment was not recorded")
            comment = {}
        author = comment.get("author") if isinstance(comment.get("author"), dict) else {}
        body_text = _text(comment.get("body"))
        if body_text is None and not _blank(comment.get("body")):
            record.warn("event.comment.body", f"({type(comment.get('body')).__name__})",
                        "expected the comment's text; the comment was not recorded")
        is_staff = _flag(record, "event.comment.author.is_staff", author.get("is_staff"), None, None)
        if is_staff is None:  # older payloads, or unreadable: the requester is the customer
            is_staff = _id(author.get("id")) not in (None, event.get("customer_id"))
        # A comment whose visibility cannot be read is kept out: a private note never counts as the customer's.
        if _flag(record, "event.comment.is_public", comment.get("is_public"), True, False) and body_text:
            key = "agent_message" if is_staff else "customer_message"
            event[key] = body_text
            event["event_type"] = "agent_reply" if is_staff else "customer_reply"
    elif kind == "status_changed":
        status = _lookup(record, "event.current", current, ZENDESK_STATUSES, "status")
        previous = _lookup(_Record(record.vendor), "event.previous", change.get("previous"), ZENDESK_STATUSES,
                           "status")
        if status is not None:
            event["status"] = status
            record.sources["status"] = "event.current"
        event["event_type"] = ("reopened" if previous in _CLOSED and status not in _CLOSED
                               else {"resolved": "resolved", "closed": "closed", "on_hold": "hold"}.get(status))
    elif kind == "priority_changed":
        priority = _lookup(record, "event.current", current, ZENDESK_PRIORITIES, "priority", "unset")
        if priority is not None or _blank(current):
            event["priority"] = priority
    elif kind == "group_assignment_changed" and not _blank(current):
        event["group"] = _id(current)
    elif kind == "agent_assignment_changed" and not _blank(current):
        event["agent_id"] = _id(current)
    event |= {"partial": True, "source_event_id": _text(body.get("id"))}
    record.problems += detail_record.problems
    record.warnings += detail_record.warnings
    record.sources = detail_record.sources | record.sources
    _check_order(record, event)
    return event


def _adapt_zendesk(body: dict, ctx: _Context) -> list[_Record | tuple[_Record, dict]]:
    if isinstance(body.get("detail"), dict) and str(body.get("type", "")).startswith("zen:event-type:"):
        record = _Record("Zendesk")
        if not str(body["type"]).startswith(ZENDESK_TICKET_EVENT):
            record.problem("type", f"{_shown(body['type'])!r} is not a ticket event (zen:event-type:ticket.*)")
            return [(record, {})]
        return [(record, _adapt_zendesk_event(record, body, ctx))]
    if isinstance(body.get("tickets"), list):
        out = []
        for i, ticket in enumerate(body["tickets"]):
            record = _Record("Zendesk", f"tickets.{i}.")
            if not isinstance(ticket, dict):
                record.problem("", "expected a ticket object")
                out.append((record, {}))
                continue
            out.append((record, _adapt_zendesk_ticket(record, ticket, body, ctx)))
        return out
    if isinstance(body.get("ticket"), dict):
        record = _Record("Zendesk", "ticket.")
        return [(record, _adapt_zendesk_ticket(record, body["ticket"], body, ctx))]
    record = _Record("Zendesk")
    return [(record, _adapt_zendesk_ticket(record, body, body, ctx))]


def verify_zendesk_signature(secret: str, body: bytes, signature: str | None, timestamp: str | None,
                             window_seconds: int, now: float | None = None) -> str | None:
    """None when valid; else why not. Signature = base64(HMAC-SHA256(secret, timestamp + body))
    (Zendesk: "Verifying webhook authenticity", headers X-Zendesk-Webhook-Signature and
    X-Zendesk-Webhook-Signature-Timestamp)."""
    if not signature or not timestamp:
        return "missing X-Zendesk-Webhook-Signature or X-Zendesk-Webhook-Signature-Timestamp"
    expected = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode()):
        return "signature does not match"
    try:
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
                     "new": "new", "in_progress": "open", "active": "open", "on_hold": "on_hold",
                     "awaiting_user_info": "pending", "awaiting_vendor": "awaiting_vendor",
                     "awaiting_problem": "awaiting_problem", "awaiting_evidence": "awaiting_evidence",
                     "resolved": "resolved", "closed": "closed", "canceled": "closed", "cancelled": "closed"}
SERVICENOW_CONTACT_TYPES = {"phone": "phone", "email": "email", "chat": "chat", "virtual_agent": "chat",
                            "self_service": "web", "web": "web", "walk_in": "phone", "social": "social",
                            "ivr": "phone", "direct_opening": "web"}
# Impact and urgency as the export writes them ("2 - Medium"); raw API values are the numbers.
SERVICENOW_LEVEL_LABELS = {1: "1 - High", 2: "2 - Medium", 3: "3 - Low"}
SERVICENOW_LABELLED = ("impact", "urgency")
SERVICENOW_LEVELS = {0: 0, 1: 1, 2: 2, 3: 3, "normal": 0, "moderate": 1, "high": 2, "overdue": 3}
# Display values like "1 - Critical"; the spaces keep ISO dates ("2025-03-02 ...") out.
_NUMBER_PREFIX = re.compile(r"^\s*(\d+)\s+-\s+(.+)$")
SERVICENOW_INTERNAL_FORMAT = "%Y-%m-%d %H:%M:%S"  # raw values and the `value` of pairs: UTC


@cache
def servicenow_extra_columns() -> dict[str, str]:
    """The servicenow mapping's `extra:` section (log column -> incident field), read on first use,
    so a served model trained on that export sees the same coded fields (opened_by, location, ...)."""
    from features.sources.mapping import load_mapping

    return dict(load_mapping("servicenow").extra)


def _sn_mode(record: dict) -> str:
    """How plain-string times of a record are written: "display" (sysparm_display_value=true: the
    API user's format and time zone) or "raw" (false, or the strings beside `all` pairs: UTC).

    References tell: {display_value, link} only with display values, {value, link} only raw.
    Without references, choice codes tell: "2" is raw, "In Progress" a display value."""
    forms = {("value" in v, "display_value" in v) for v in record.values() if isinstance(v, dict)}
    if (False, True) in forms:
        return "display"
    if forms:
        return "raw"
    for key in ("state", "incident_state", "priority", "urgency", "impact"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return "raw" if value.strip().isdecimal() else "display"
    return "raw"


class _ServiceNowRecord:
    """Reads one incident record in any of the three shapes."""

    def __init__(self, record: dict, out: _Record, settings: Settings):
        self.record, self.out, self.settings = record, out, settings
        self.mode = _sn_mode(record)
        self.zone = ZoneInfo(settings.servicenow_time_zone)
        self.formats = tuple(strptime_format(f) for f in settings.servicenow_date_formats)
        self.reference_form = settings.servicenow_references
        self._warned_form: set[str] = set()

    def present(self, key: str) -> bool:
        value = self.record.get(key)
        if isinstance(value, dict):
            return not (_blank(value.get("value")) and _blank(value.get("display_value")))
        return not _blank(value)

    def code(self, key: str) -> Any:
        """A choice field: the code of a pair (language-independent), a label's leading number
        ("2 - High" -> 2), else the label as sent."""
        value = self.record.get(key)
        if isinstance(value, dict):
            value = value.get("value") if not _blank(value.get("value")) else value.get("display_value")
        if isinstance(value, str):
            match = _NUMBER_PREFIX.match(value)
            if match:
                return int(match.group(1))
            value = value.strip()
        return None if _blank(value) else value

    def label(self, key: str) -> str | None:
        """A coded field as the export writes it (the model's form): a pair's display value,
        "2 - Medium" for a raw impact or urgency."""
        value = self.record.get(key)
        if isinstance(value, dict):
            if "link" in value:
                return self.reference(key)
            value = value.get("display_value") if not _blank(value.get("display_value")) else value.get("value")
        text = _text(value)
        if text is not None and key in SERVICENOW_LABELLED and text.isdecimal():
            return SERVICENOW_LEVEL_LABELS.get(int(text), text)
        return text

    def reference(self, key: str) -> str | None:
        """A reference (caller, group, assignee, ...) in the form the model was trained on
        (settings.servicenow_references); when only the other form was sent, that one, with a warning."""
        value = self.record.get(key)
        if not isinstance(value, dict):
            return _text(value)
        wanted = value.get(self.reference_form)
        if not _blank(wanted):
            return _text(wanted)
        other = "value" if self.reference_form == "display_value" else "display_value"
        if _blank(value.get(other)):
            return None
        if key not in self._warned_form:
            self._warned_form.add(key)
            what = "sys_id" if other == "value" else "display name"
            trained = "display names" if self.reference_form == "display_value" else "sys_ids"
            self.out.warn(key, value.get(other), f"only the {what} was sent but the model knows {trained} "
                                                 f"(ESCALATION_RISK_SERVICENOW_REFERENCES={self.reference_form}); "
                                                 f"scored with the {what}: send sysparm_display_value=all for both")
        return _text(value.get(other))

    def time(self, key: str) -> str | None:
        """A date-time: a pair's `value` (UTC, yyyy-MM-dd HH:mm:ss); a display value in the API
        user's format(s) and time zone; a raw string in UTC."""
        value = self.record.get(key)
        display = self.mode == "display"
        if isinstance(value, dict):
            display = _blank(value.get("value"))
            value = value.get("display_value") if display else value.get("value")
        if display:
            return _parse_time(self.out, key, value, self.formats, self.zone)
        return _parse_time(self.out, key, value, (SERVICENOW_INTERNAL_FORMAT,), UTC)

    def count(self, key: str) -> int | None:
        """A counter; one that is not a whole number is left not set, with a warning."""
        value = self.code(key)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = float("nan")
        if not number.is_integer():
            self.out.warn(key, value, "expected a whole number; scored as 'not set'")
            return None
        return int(number)


def _servicenow_view(reader: _ServiceNowRecord) -> _View:
    record = reader.record
    return _View(field=lambda p: reader.label(p) if "." not in p else _path(record, p),
                 custom_field=lambda name: reader.label(name),
                 tags=lambda: _tags_of(reader.label("sys_tags") or ""))


def _adapt_servicenow_record(out: _Record, record: dict, ctx: _Context) -> dict:
    reader = _ServiceNowRecord(record, out, ctx.settings)
    ticket_id = _id(reader.label("number")) or _id(reader.code("sys_id"))
    if ticket_id is None:
        out.problem("number", "required field is missing (number or sys_id)")
    out.sources |= {"created_at": out.name("opened_at"), "event_time": out.name("sys_updated_on")}
    created = reader.time("opened_at")
    updated = reader.time("sys_updated_on")
    partial = not reader.present("opened_at")
    if partial and updated is None and not reader.present("sys_updated_on"):
        out.problem("sys_updated_on", "required field is missing (a record without opened_at is an update "
                                      "and needs its time)")
    if updated is None and not partial:
        out.sources["event_time"] = out.name("opened_at")
    state_key = "state" if reader.present("state") else "incident_state"
    mapped = _mapped_fields(out, _servicenow_view(reader), ctx.mapping)
    out.sources |= {"status": out.name(state_key), "priority": out.name("priority"),
                    "channel": out.name("contact_type"), "customer_id": out.name("caller_id"),
                    "agent_id": out.name("assigned_to"), "group": out.name("assignment_group")}
    event = {
        "ticket_id": ticket_id,
        "created_at": created,
        "event_time": updated or created,
        "channel": mapped.pop("channel", None) or _lookup(
            out, "contact_type", reader.code("contact_type"), SERVICENOW_CONTACT_TYPES, "contact_type"),
        "priority": _lookup(out, "priority", reader.code("priority"), SERVICENOW_PRIORITIES, "priority", "unset"),
        "status": _lookup(out, state_key, reader.code(state_key), SERVICENOW_STATES, state_key),
        "customer_id": reader.reference("caller_id"),
        "agent_id": reader.reference("assigned_to"),
        "group": reader.reference("assignment_group"),
        "subject": reader.label("short_description"),
        "description": reader.label("description"),
        "escalation_level": _lookup(out, "escalation", reader.code("escalation"), SERVICENOW_LEVELS, "escalation",
                                    "unset"),
        "sla_due_at": reader.time("sla_due"),
        "reassignment_count": reader.count("reassignment_count"),
        "reopen_count": reader.count("reopen_count"),
        # The mapping counts updates so far (sys_mod_count) as agent_messages.
        "agent_messages": reader.count("sys_mod_count"),
    }
    event.update({k: v for k, v in mapped.items() if v is not None or k not in event})
    extra = {name: value for name, source in servicenow_extra_columns().items()
             if (value := reader.label(source)) is not None}
    event["extra"] = extra or None
    sys_id, mods = _id(reader.code("sys_id")), reader.code("sys_mod_count")
    event["source_event_id"] = f"{sys_id}:{mods}" if sys_id and mods is not None else None
    if partial:
        event["partial"] = True
    _check_order(out, event)
    return event


def _adapt_servicenow(body: dict, ctx: _Context) -> list[tuple[_Record, dict]]:
    if isinstance(body.get("result"), list | dict):
        records, prefix = body["result"], "result."
    elif isinstance(body.get("records"), list):  # the JSONv2 processor
        records, prefix = body["records"], "records."
    else:
        records, prefix = body, ""
    many = isinstance(records, list)
    out = []
    for i, record in enumerate(records if many else [records]):
        reader = _Record("ServiceNow", f"{prefix}{i}." if many and len(records) > 1 else "")
        if not isinstance(record, dict):
            reader.problem(prefix.rstrip(".") or "(body)", "expected an incident record (a JSON object)")
            out.append((reader, {}))
            continue
        out.append((reader, _adapt_servicenow_record(reader, record, ctx)))
    if not out:
        reader = _Record("ServiceNow")
        reader.problem(prefix.rstrip(".") or "(body)", "no incident record")
        out.append((reader, {}))
    return out


# --- Freshdesk -----------------------------------------------------------------------------
FRESHDESK_PRIORITIES = {1: "low", 2: "normal", 3: "high", 4: "urgent",
                        "low": "low", "medium": "normal", "high": "high", "urgent": "urgent"}
FRESHDESK_STATUSES = {2: "open", 3: "pending", 4: "resolved", 5: "closed",
                      "open": "open", "pending": "pending", "resolved": "resolved", "closed": "closed"}
FRESHDESK_SOURCES = {1: "email", 2: "web", 3: "phone", 4: "web", 5: "social", 6: "social", 7: "chat",
                     8: "chat", 9: "web", 10: "email",
                     "email": "email", "portal": "web", "phone": "phone", "forum": "web", "twitter": "social",
                     "facebook": "social", "chat": "chat", "mobihelp": "chat", "feedback_widget": "web",
                     "outbound_email": "email"}
# Placeholder dates: {{ticket.due_by_time}} is "%B %e %Y at %I:%M %p %Z" in the helpdesk's zone;
# {{ticket.created_on}} / {{ticket.modified_on}} render the time itself.
FRESHDESK_DATE_FORMATS = ("%B %d %Y at %I:%M %p", "%a, %d %b, %Y at %I:%M %p", "%a, %d %b %Y at %I:%M %p",
                          "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S", "%a, %d %b %Y %H:%M:%S %z")
_ZONE_SUFFIX = re.compile(r"^(.*\d(?:\s*[AaPp][Mm])?)\s+([A-Za-z]{2,5})$")
FRESHDESK_WEBHOOK_EVENTS = {"created": "created", "status": None, "priority": "priority_changed"}


def _freshdesk_time(record: _Record, key: str, value: Any, zone: ZoneInfo) -> str | None:
    """A Freshdesk date: ISO 8601 (API v2) or a placeholder's rendering; a trailing zone
    abbreviation ("IST") is read in the helpdesk's zone (settings.freshdesk_time_zone)."""
    if isinstance(value, str):
        text = " ".join(value.split())
        match = _ZONE_SUFFIX.match(text)
        if match and match.group(2).upper() not in ("AM", "PM"):
            text, abbreviation = match.group(1), match.group(2).upper()
            parsed = _parse_time(record, key, text, FRESHDESK_DATE_FORMATS,
                                 UTC if abbreviation in ("UTC", "GMT", "Z") else zone, iso=False)
            if parsed and abbreviation not in ("UTC", "GMT", "Z"):
                local = datetime.fromisoformat(parsed).astimezone(zone)
                if local.tzname() != abbreviation:
                    record.warn(key, value, f"time zone {abbreviation} is not the helpdesk's "
                                            f"({zone.key}, {local.tzname()} then: ESCALATION_RISK_FRESHDESK_TIME_ZONE); "
                                            f"read in {zone.key}")
            return parsed
        value = text
    return _parse_time(record, key, value, FRESHDESK_DATE_FORMATS, zone)


def _adapt_freshdesk_ticket(record: _Record, ticket: dict, ctx: _Context) -> dict:
    """An API v2 ticket object (integer status, priority and source; labels accepted too)."""
    custom = ticket.get("custom_fields") if isinstance(ticket.get("custom_fields"), dict) else {}
    view = _View(field=lambda p: _path(ticket, p), custom_field=custom.get, tags=lambda: _tags_of(ticket.get("tags")))
    mapped = _mapped_fields(record, view, ctx.mapping)
    zone = ZoneInfo(ctx.settings.freshdesk_time_zone)
    record.sources |= {"created_at": record.name("created_at"), "event_time": record.name("updated_at"),
                       "status": record.name("status"), "priority": record.name("priority"),
                       "channel": record.name("source"), "customer_id": record.name("requester_id"),
                       "agent_id": record.name("responder_id"), "group": record.name("group_id"),
                       "sla_due_at": record.name("due_by")}
    ticket_id = _id(ticket.get("id"))
    if ticket_id is None:
        record.problem("id", "required field is missing")
    if _blank(ticket.get("created_at")):
        record.problem("created_at", "required field is missing")
    created = _freshdesk_time(record, "created_at", ticket.get("created_at"), zone)
    updated = _freshdesk_time(record, "updated_at", ticket.get("updated_at"), zone)
    escalated = ticket.get("is_escalated")
    event = {
        "ticket_id": ticket_id,
        "created_at": created,
        "event_time": updated or created,
        "channel": mapped.pop("channel", None) or _lookup(
            record, "source", ticket.get("source"), FRESHDESK_SOURCES, "source"),
        "priority": _lookup(record, "priority", ticket.get("priority"), FRESHDESK_PRIORITIES, "priority", "unset"),
        "status": _lookup(record, "status", ticket.get("status"), FRESHDESK_STATUSES, "status"),
        "customer_id": _id(ticket.get("requester_id")),
        "agent_id": _id(ticket.get("responder_id")),
        "group": _id(ticket.get("group_id")),
        "subject": _text(ticket.get("subject")),
        "description": _text(ticket.get("description_text")) or _plain_text(ticket.get("description")),
        "sla_due_at": _freshdesk_time(record, "due_by", ticket.get("due_by"), zone),
        "escalation_level": int(bool(escalated)) if isinstance(escalated, bool) else None,
    }
    event.update({k: v for k, v in mapped.items() if v is not None or k not in event})
    _check_order(record, event)
    return event


def _adapt_freshdesk_webhook(record: _Record, hook: dict, ctx: _Context) -> dict:
    """An automation rule's "Trigger webhook" body: `ticket_*` keys with placeholder labels.
    Only the placeholders the rule's author chose are there: a partial event."""
    def key_of(name: str) -> str:
        return name if name in hook or f"ticket_{name}" not in hook else f"ticket_{name}"

    def get(*names: str) -> tuple[str, Any]:
        for name in names:
            for key in (f"ticket_{name}", name):
                if not _blank(hook.get(key)):
                    return key, hook[key]
        return f"ticket_{names[0]}", None

    view = _View(field=lambda p: hook.get(key_of(p.replace(".", "_"))),
                 custom_field=lambda name: hook.get(key_of(name)),
                 tags=lambda: _tags_of(hook.get("ticket_tags") or hook.get("tags")))
    mapped = _mapped_fields(record, view, ctx.mapping)
    zone = ZoneInfo(ctx.settings.freshdesk_time_zone)
    id_key, ticket_id = get("id")
    ticket_id = _id(ticket_id)
    if ticket_id is None:
        record.problem(id_key, "required field is missing")
    created_key, created = get("created_on", "created_at")
    updated_key, updated = get("modified_on", "updated_on", "updated_at")
    record.sources |= {"created_at": record.name(created_key), "event_time": record.name(updated_key)}
    event_time = _freshdesk_time(record, updated_key, updated, zone)
    if event_time is None and updated is None:
        event_time = ctx.received_at.astimezone(UTC).isoformat()
        record.warn(updated_key, None, "no update time in the webhook (add \"ticket_modified_on\": "
                                       "\"{{ticket.modified_on}}\"); the time it was received is used")
    status_key, status = get("status")
    priority_key, priority = get("priority")
    source_key, source = get("source")
    due_key, due = get("due_by_time", "due_by")
    group_key, group = get("group_name", "group_id")
    agent_key, agent = get("agent_email", "agent_name", "responder_id")
    customer_key, customer = get("requester_email", "requester_id", "from_email", "requester_name", "contact_email")
    record.sources |= {"status": record.name(status_key), "priority": record.name(priority_key),
                       "channel": record.name(source_key), "sla_due_at": record.name(due_key),
                       "group": record.name(group_key), "agent_id": record.name(agent_key),
                       "customer_id": record.name(customer_key)}
    event = {
        "ticket_id": ticket_id,
        "created_at": _freshdesk_time(record, created_key, created, zone),
        "event_time": event_time,
        "channel": mapped.pop("channel", None) or _lookup(record, source_key, source, FRESHDESK_SOURCES, "source"),
        "priority": _lookup(record, priority_key, priority, FRESHDESK_PRIORITIES, "priority", "unset"),
        "status": _lookup(record, status_key, status, FRESHDESK_STATUSES, "status"),
        "customer_id": _id(customer),
        "agent_id": _id(agent),
        "group": _id(group),
        "subject": _text(get("subject")[1]),
        "description": _plain_text(get("description_text", "description")[1]),
        "sla_due_at": _freshdesk_time(record, due_key, due, zone),
        "event_type": _freshdesk_event_type(hook.get("triggered_event")),
        "partial": True,
    }
    event.update({k: v for k, v in mapped.items() if v is not None or k not in event})
    _check_order(record, event)
    return event


def _freshdesk_event_type(triggered: Any) -> str | None:
    """{{triggered_event}}: "{ticket_action:created}", "{status:{from:2,to:4}}", "{priority:{...}}"."""
    if not isinstance(triggered, str):
        return None
    parts = [p for p in re.split(r"[{}:,\s]+", triggered) if p]
    if parts[:2] == ["ticket_action", "created"]:
        return "created"
    if parts and parts[0] == "status" and len(parts) >= 5:
        to = FRESHDESK_STATUSES.get(_code(parts[4]))
        before = FRESHDESK_STATUSES.get(_code(parts[2]))
        if before in _CLOSED and to not in _CLOSED and to is not None:
            return "reopened"
        return {"resolved": "resolved", "closed": "closed"}.get(to)
    return FRESHDESK_WEBHOOK_EVENTS.get(parts[0]) if parts else None


def _adapt_freshdesk(body: dict, ctx: _Context) -> list[tuple[_Record, dict]]:
    if isinstance(body.get("freshdesk_webhook"), dict):
        record = _Record("Freshdesk", "freshdesk_webhook.")
        return [(record, _adapt_freshdesk_webhook(record, body["freshdesk_webhook"], ctx))]
    if isinstance(body.get("ticket"), dict):
        record = _Record("Freshdesk", "ticket.")
        return [(record, _adapt_freshdesk_ticket(record, body["ticket"], ctx))]
    if "id" not in body and any(str(k).startswith("ticket_") for k in body):
        record = _Record("Freshdesk")
        return [(record, _adapt_freshdesk_webhook(record, body, ctx))]
    record = _Record("Freshdesk")
    return [(record, _adapt_freshdesk_ticket(record, body, ctx))]


ADAPTERS = {"zendesk": _adapt_zendesk, "servicenow": _adapt_servicenow, "freshdesk": _adapt_freshdesk}


def adapt_payload(system: str, body: dict, headers: Mapping[str, str] | None, settings: Settings,
                  mapping: IntegrationMapping | None = None, received_at: datetime | None = None) -> AdaptedPayload:
    """The canonical events (full or partial) and warnings of one vendor payload.

    system: "zendesk", "servicenow" or "freshdesk"; body: the parsed JSON; headers: the request's
    (Zendesk's X-Zendesk-Webhook-Invocation-Id becomes a trigger webhook's source_event_id);
    settings: ServiceNow date formats, time zone and reference form, Freshdesk's time zone and the
    integration mapping file (or `mapping`, already loaded). Raises KeyError for an unknown system
    and PayloadError naming the vendor's fields when no record can be mapped (a missing id, an
    unusable time, an update before creation). Nothing is scored or stored here.
    """
    if system not in ADAPTERS:
        raise KeyError(system)
    if not isinstance(body, dict):
        raise PayloadError([("(body)", "expected a JSON object")])
    mapping = mapping or load_mapping_for(settings)
    ctx = _Context(settings=settings, mapping=getattr(mapping, system), headers=headers or {},
                   received_at=received_at or datetime.now(UTC))
    records = ADAPTERS[system](body, ctx)
    if not records:
        raise PayloadError([("(body)", "no ticket or record in the payload")])
    adapted = AdaptedPayload(events=[], warnings=[])
    for index, (record, event) in enumerate(records):
        if record.problems:
            if len(records) == 1:
                raise PayloadError(record.problems)
            adapted.errors += [{"index": index, "ticket_id": event.get("ticket_id"), "field": f, "message": m}
                               for f, m in record.problems]
            continue
        adapted.events.append(_finish(event))
        adapted.sources.append(record.sources)
        adapted.event_warnings.append(record.warnings)
        adapted.positions.append(index)
        adapted.warnings += record.warnings
    if not adapted.events:
        raise PayloadError([(e["field"], e["message"]) for e in adapted.errors])
    return adapted


def event_to_ticket(event: dict) -> dict:
    """A canonical event as a ticket to score on its own: the message a customer just sent is the
    latest customer message; the store's own keys (partial, source_event_id) are left out."""
    ticket = {k: v for k, v in event.items() if k not in EVENT_KEYS}
    if event.get("customer_message") is not None:
        ticket["last_customer_message"] = event["customer_message"]
    return ticket
