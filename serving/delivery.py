"""Sending one alert to one destination: the signed JSON webhook, Slack, and write-back to Zendesk,
ServiceNow and Freshdesk, with quick retries (tenacity) inside one delivery round.

The signed webhook (the receiver's check is `verify_webhook_signature`, documented in docs/alerts.md):

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <alert key>:<destination name>     (the same on every retry: dedupe on it)
    X-Escalation-Risk-Timestamp: <unix seconds>
    X-Escalation-Risk-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Vendor write-back follows each vendor's REST API:
- Zendesk "Update Ticket": PUT /api/v2/tickets/{id}.json {"ticket": {"additional_tags": [tag],
  "comment": {"body": ..., "public": false}}}, basic auth "{email}/token:{api_token}";
- ServiceNow Table API: PATCH /api/now/table/incident/{sys_id} {"work_notes": ...} (an incident
  number is looked up first: GET /api/now/table/incident?sysparm_query=number=...), basic auth;
- Freshdesk "Create a Note": POST /api/v2/tickets/{id}/notes {"body": ..., "private": true}, basic
  auth "{api_key}:X".
Slack: an incoming-webhook message {"text": ..., "blocks": [...]}.

Errors recorded for a delivery name the status or the exception class only: never a URL (a Slack
URL is a secret), a credential or ticket text.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from features.settings import Settings
from serving.destinations import Destination

SIGNATURE_HEADER = "X-Escalation-Risk-Signature"
TIMESTAMP_HEADER = "X-Escalation-Risk-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_SECONDS = 300
TRANSIENT_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "escalation-risk-alerts/1"
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")


class DeliveryFailed(Exception):
    """One try failed: `permanent` (a 4xx the destination will answer again) or worth retrying."""

    def __init__(self, problem: str, permanent: bool = False, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(problem)
        self.problem, self.permanent, self.retry_after, self.status = problem, permanent, retry_after, status


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    attempts: int
    status: int | None
    error: str | None = None
    permanent: bool = False


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """'sha256=' + hex HMAC-SHA256 of b'<timestamp>.' + body, keyed with the shared secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_webhook_signature(secret: str, body: bytes, timestamp: str | None, signature: str | None,
                             now: float | None = None,
                             tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS) -> str | None:
    """The receiver's check: None when the request is authentic and fresh, else the problem.

    Recompute the signature over the raw body as received (before any JSON parsing), compare in
    constant time, and refuse timestamps further than `tolerance_seconds` from the receiver's
    clock (a replayed request). Dedupe on the Idempotency-Key header (retries repeat it)."""
    if not timestamp or not signature:
        return "missing signature or timestamp header"
    try:
        sent = int(timestamp)
    except ValueError:
        return "timestamp is not unix seconds"
    if abs((time.time() if now is None else now) - sent) > tolerance_seconds:
        return "timestamp outside the tolerance (replayed or clock skew)"
    if not hmac.compare_digest(sign_webhook(secret, sent, body).encode(), signature.strip().encode()):
        return "signature does not match"
    return None


def idempotency_key(alert: dict, destination: Destination) -> str:
    return f"{alert['key']}:{destination.name}"


def describe_alert(alert: dict) -> str:
    """One plain-text paragraph for people: risk, action, due time and the reasons (feature values only)."""
    action = alert.get("action") or {}
    reasons = "; ".join(f"{r.get('label', r.get('feature'))} = {r.get('value')} ({r.get('direction')})"
                        for r in alert.get("reasons") or [])
    return (f"Escalation risk alert #{alert['alert_id']} for ticket {alert['ticket_id']}: "
            f"{alert['band']} risk ({alert['probability']:.0%}, {alert['trigger'].replace('_', ' ')}). "
            f"Action: {action.get('route_to')} ({action.get('tier')}, {action.get('escalation_type')}), "
            f"respond within {action.get('respond_within')} h (due {alert.get('due_at')}; rule {action.get('rule')}). "
            f"Reasons: {reasons or 'none given'}. Model {alert.get('model_version')}.")


def webhook_body(alert: dict, destination: Destination) -> dict:
    return {"type": "escalation_risk.alert", "idempotency_key": idempotency_key(alert, destination),
            **{k: alert[k] for k in ("alert_id", "ticket_id", "raised_at", "trigger", "probability", "band",
                                     "escalate_now", "reasons", "action", "due_at", "model_version", "group")
               if k in alert}}


def slack_body(alert: dict) -> dict:
    text = describe_alert(alert)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def _check(response: requests.Response) -> requests.Response:
    status = response.status_code
    if 200 <= status < 300:
        return response
    retry_after = None
    if response.headers.get("Retry-After", "").isdigit():
        retry_after = float(response.headers["Retry-After"])
    permanent = 400 <= status < 500 and status not in TRANSIENT_STATUSES
    raise DeliveryFailed(f"HTTP {status}", permanent=permanent, retry_after=retry_after, status=status)


def send_once(destination: Destination, alert: dict, settings: Settings, http: requests.Session) -> int:
    """One try; returns the HTTP status or raises DeliveryFailed."""
    timeout = destination.timeout_seconds
    key = idempotency_key(alert, destination)
    headers = {IDEMPOTENCY_HEADER: key, "User-Agent": USER_AGENT, "Accept": "application/json"}
    address = destination.address(settings)
    ticket = str(alert["ticket_id"])
    try:
        if destination.type == "webhook":
            body = orjson.dumps(webhook_body(alert, destination))
            stamp = int(time.time())
            headers.update({"Content-Type": "application/json", TIMESTAMP_HEADER: str(stamp),
                            SIGNATURE_HEADER: sign_webhook(settings.alert_webhook_secret or "", stamp, body)})
            return _check(http.post(address, data=body, headers=headers, timeout=timeout)).status_code
        if destination.type == "slack":
            return _check(http.post(address, json=slack_body(alert), headers=headers, timeout=timeout)).status_code
        if destination.type == "zendesk":
            auth = (f"{settings.zendesk_email}/token", settings.zendesk_api_token or "")
            if not ticket.isdigit():
                raise DeliveryFailed("a Zendesk ticket id is a number", permanent=True)
            body = {"ticket": {"additional_tags": [destination.tag],
                               "comment": {"body": describe_alert(alert), "public": False}}}
            return _check(http.put(f"{address}/api/v2/tickets/{ticket}.json", json=body, headers=headers,
                                   auth=auth, timeout=timeout)).status_code
        if destination.type == "servicenow":
            auth = (settings.servicenow_username or "", settings.servicenow_password or "")
            sys_id = ticket if _SYS_ID.match(ticket) else servicenow_sys_id(address, ticket, http, auth, timeout)
            return _check(http.patch(f"{address}/api/now/table/incident/{sys_id}",
                                     json={"work_notes": describe_alert(alert)}, headers=headers, auth=auth,
                                     timeout=timeout)).status_code
        if destination.type == "freshdesk":
            if not ticket.isdigit():
                raise DeliveryFailed("a Freshdesk ticket id is a number", permanent=True)
            body = {"body": f"<p>{_escape_html(describe_alert(alert))}</p>", "private": True}
            return _check(http.post(f"{address}/api/v2/tickets/{ticket}/notes", json=body, headers=headers,
                                    auth=(settings.freshdesk_api_key or "", "X"), timeout=timeout)).status_code
    except requests.Timeout as exc:
        raise DeliveryFailed(f"timed out after {timeout:g} s") from exc
    except requests.RequestException as exc:  # connection refused, reset, DNS...: the class only (no URL)
        raise DeliveryFailed(type(exc).__name__) from exc
    raise DeliveryFailed(f"unknown destination type {destination.type}", permanent=True)


def servicenow_sys_id(address: str, number: str, http: requests.Session, auth: tuple, timeout: float) -> str:
    """The sys_id of the incident with this number (Table API query); unknown number: permanent failure."""
    response = _check(http.get(f"{address}/api/now/table/incident",
                               params={"sysparm_query": f"number={number}", "sysparm_fields": "sys_id",
                                       "sysparm_limit": "1"},
                               headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                               auth=auth, timeout=timeout))
    try:
        return str(response.json()["result"][0]["sys_id"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise DeliveryFailed("incident number not found in ServiceNow", permanent=True) from exc


def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wait_for(destination: Destination) -> Callable[[RetryCallState], float]:
    """Exponential backoff between tries, or the destination's Retry-After when it sent one (capped)."""
    policy = destination.retry
    exponential = wait_exponential(multiplier=policy.initial_seconds, max=policy.max_seconds)

    def wait(state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, DeliveryFailed) and failure.retry_after is not None:
            return min(failure.retry_after, policy.max_seconds)
        return exponential(state)

    return wait


def deliver(destination: Destination, alert: dict, settings: Settings, http: requests.Session,
            sleep: Callable[[float], None] = time.sleep) -> DeliveryResult:
    """Up to `retry.attempts` tries with backoff; a permanent failure stops at once."""
    attempts = 0

    def attempt() -> int:
        nonlocal attempts
        attempts += 1
        return send_once(destination, alert, settings, http)

    retrying = Retrying(
        stop=stop_after_attempt(destination.retry.attempts),
        wait=_wait_for(destination),
        retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryFailed) and not exc.permanent),
        sleep=sleep,
        reraise=True,
    )
    try:
        status = retrying(attempt)
    except DeliveryFailed as exc:
        return DeliveryResult(False, attempts, exc.status, exc.problem, exc.permanent)
    return DeliveryResult(True, attempts, status)
