"""The one scoring path of the service: routes, integrations and the queue watcher all call it.

A state is a canonical ticket dict (a validated request, or a merged state from the ticket
store, times as datetimes or ISO strings); it is scored as of its `event_time` (the watcher
re-scores an idle ticket by passing its stored state with `event_time` = now, so its age and
SLA clock advance). The live history (features.history.LiveHistory) is brought up to date
with the store before the features are computed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bundle.online_score import score_many
from features.settings import Settings
from serving.live_model import LiveModel
from serving.policy import EscalationMatrix, as_utc, describe_ticket, describe_types


def score_states(live: LiveModel, policy: EscalationMatrix, states: list[dict], settings: Settings,
                 now: datetime | None = None, features_out: list[dict] | None = None,
                 sync_history: bool = True, explain: bool = True) -> list[dict]:
    """The /v1/score response dict of each state, in order: ticket_id, escalation{probability, band,
    escalate_now, reasons, types, likely_type} (shape_escalation), priority{predicted, probabilities}, action (the escalation matrix's
    decision), model{name, version}, scored_at (`now`, default the current UTC time), warnings.

    `features_out`, when a list, receives each state's feature values ({name: value}); `sync_history`
    False: the caller has just brought the live history up to date itself. `explain` False: no reasons
    (every `reasons` list empty; the same probabilities, bands and actions), for callers that need
    reasons only for the few tickets they act on (the queue watcher).
    Raises whatever the model raises on an unusable ticket (the routes validate first)."""
    if sync_history:
        live.sync_history()
    now_utc = (now or datetime.now(UTC)).astimezone(UTC)
    scored_at = now_utc.isoformat(timespec="milliseconds")
    model = {"name": settings.registered_model_name, "version": live.bundle.version}
    scored_rows = score_many(live.bundle, live.online, states, lock=live.predict_lock, reasons=settings.reasons if explain else "none",
                             features_out=features_out)
    out = []
    for state, scored in zip(states, scored_rows, strict=True):
        band, predicted = scored["band"], scored["priority_predicted"]
        out.append({
            "ticket_id": scored["ticket_id"],
            "escalation": shape_escalation(scored),
            # null when the model was trained without a priority target (an export without priorities)
            "priority": ({"predicted": predicted, "probabilities": scored["priority_probabilities"]}
                         if predicted is not None else None),
            "action": policy.decide(band, predicted, state.get("category"), describe_ticket(
                state, as_utc(state.get("event_time")) or now_utc, state.get("last_update_at")),
                describe_types(scored["types"], scored["likely_type"])),
            "model": model,
            "scored_at": scored_at,
            "warnings": scored["warnings"],
        })
    return out


def shape_escalation(scored: dict) -> dict:
    """The response's `escalation`: the primary label's probability, band, escalate_now and reasons
    (as before labels were a list), `types` (each label's, features.labels) and `likely_type`."""
    return {"probability": scored["escalation_probability"], "band": scored["band"],
            "escalate_now": scored["escalate_now"], "reasons": scored["reasons"],
            "types": scored["types"], "likely_type": scored["likely_type"]}
