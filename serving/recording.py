"""Recording what the service scores in the ticket store: the one unit of work shared by /v1/score,
/v1/events and the integration endpoint (events merged, history facts, scores; one commit)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.exc import DBAPIError

from serving.errors import ApiError
from serving.scoring import score_states
from serving.store.db import StoreUnavailable, unavailable_reason
from serving.store.merge import normal_status
from serving.store.tickets import EventError, RecordedEvent, ScoresToRecord, TicketStore, parse_time

log = logging.getLogger("escalation_risk.serving")


def current_store() -> TicketStore | None:
    return current_app.extensions.get("ticket_store")


def require_store() -> TicketStore:
    store = current_store()
    if store is None:
        raise ApiError(404, "state_off", "the service keeps no ticket state (ESCALATION_RISK_STATE=off)")
    return store


def store_error(exc: BaseException) -> ApiError:
    """A JSON 503 with Retry-After for a busy, full or unreachable store (nothing half-written)."""
    reason = exc if isinstance(exc, StoreUnavailable) else unavailable_reason(exc)
    if reason is None:
        raise exc
    return ApiError(503, "store_unavailable", str(reason), headers={"Retry-After": str(reason.retry_after)})


def closed_statuses(live) -> list[str]:
    params = live.bundle.metadata.get("params") or {}
    return list(params.get("snapshots.closed_statuses") or ["closed"])


def record_and_score(live, events: list[dict], source: str, field_prefix: str = "",
                     as_sent: bool = False) -> tuple[list[RecordedEvent], dict]:
    """Record events, score and record the scores, in one unit of work committed before this returns
    (durable before acknowledged).

    Default (/v1/events, integrations): each touched ticket's merged state is scored once; returns the
    recorded events and {ticket_id: score}, a duplicate delivery answered with the score first given
    for it. `as_sent` (/v1/score): each event is scored as it was sent (with the store's live history),
    as the stateless service scored it; returns {input index: score}.
    Raises ApiError 422 (bad events) or 503 (store unavailable)."""
    store = require_store()
    store.closed_statuses = frozenset(normal_status(s) for s in closed_statuses(live))
    policy = current_app.extensions["policy"]
    settings = current_app.extensions["settings"]
    applied = []

    def score_as_sent(recorded: list[RecordedEvent], read_history, stored_score):
        applied.append(True)
        live.sync_history(read_since=read_history)  # this transaction's facts included
        features: list[dict] = []
        now = datetime.now(UTC)
        fresh = score_states(live, policy, events, settings, now, features_out=features, sync_history=False)
        # The ticket's latest score (the queue's) is that of its latest event: record in event-time order.
        order = sorted(range(len(events)), key=lambda i: parse_time(events[i]["event_time"]))
        batch = ScoresToRecord([fresh[i] for i in order], live.bundle.version, now,
                               [recorded[i].event_id for i in order], [features[i] for i in order])
        return dict(enumerate(fresh)), batch

    def scorer(recorded: list[RecordedEvent], read_history, stored_score):
        scores: dict[str, dict] = {}
        to_score: dict[str, tuple[dict, int | None]] = {}
        for item in recorded:
            if item.duplicate and item.ticket_id not in to_score:
                stored = stored_score(item.event_id)
                if stored is not None:
                    scores[item.ticket_id] = stored
                    continue
            scores.pop(item.ticket_id, None)
            to_score[item.ticket_id] = (item.state, item.event_id)
        if not to_score:
            return scores, None
        applied.append(True)
        live.sync_history(read_since=read_history)  # this transaction's facts included
        features: list[dict] = []
        now = datetime.now(UTC)
        fresh = score_states(live, policy, [state for state, _ in to_score.values()], settings, now,
                             features_out=features, sync_history=False)
        scores.update(zip(to_score, fresh, strict=True))
        return scores, ScoresToRecord(fresh, live.bundle.version, now, [e for _, e in to_score.values()], features)

    try:
        recorded, scores = store.record_and_score(events, source, score_as_sent if as_sent else scorer)
    except EventError as exc:
        details = []
        for index, name, message in exc.problems:
            prefix = f"{field_prefix}{index}." if field_prefix else ""
            details.append({"field": prefix + name, "message": message})
            if "before the ticket's created_at" in message:
                details.append({"field": prefix + "created_at", "message": message})
        raise ApiError(422, "invalid_event", "some events cannot be merged into their tickets", details) from exc
    except BaseException as exc:
        if applied and live.live_history is not None:
            live.live_history.reset()  # it saw facts of a unit of work that did not commit
        if isinstance(exc, StoreUnavailable | DBAPIError):
            raise store_error(exc) from exc
        raise
    count_scores([score for ticket_id, score in scores.items()])
    return recorded, scores


def count_scores(scores: list[dict]) -> None:
    metrics = current_app.extensions["metrics"]
    for band, count in Counter(s["escalation"]["band"] for s in scores).items():
        metrics.count_scores(band, count)
