"""The escalation matrix: band x predicted priority x category x the ticket's own facts -> route,
tier, type, response time.

Besides the model's band and predicted priority, a rule may look at what the ticket says
(its typed priority, the customer's tier) and at time (the SLA breached, hours since the last
update, hours since the customer last wrote), so time-based and priority escalations are rules
too. With a bundle of several labels (features.labels), a rule may also match on the most
likely kind of escalation (`likely_type`) and on the band of each kind's own model
(`type_band`), so an SLA risk goes to the SLA desk and a customer-initiated risk to a supervisor.
Ops leads own the YAML file; a mistake in it must stop start-up (or a reload) with a
message that names the file, line, rule and field, not surface later as a wrong routing decision.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from features.schema import PRIORITY_ALIASES, normalize_category, normalize_priority_value
from features.yaml_files import load_yaml_model

Band = Literal["low", "medium", "high"]
Priority = Literal["low", "normal", "high", "urgent"]
Tier = Literal["frontline", "supervisor", "specialist_team", "manager"]
EscalationType = Literal["hierarchical", "functional", "time_based", "priority", "customer_initiated"]


class PolicyError(ValueError):
    """The escalation matrix file is missing or invalid."""


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route_to: str = Field(min_length=1)
    tier: Tier
    escalation_type: EscalationType
    respond_within: float = Field(gt=0, description="hours")


TypedPriority = Literal["low", "normal", "high", "urgent", "p1", "p2", "p3", "p4"]


@dataclass(frozen=True)
class TicketFacts:
    """What a rule may know about the ticket beyond its score (None = unknown: a rule that asks fails).

    typed_priority: the priority people set, normalised (P1..P4 -> urgent..low); customer_tier
    lower-cased; hours in hours (float) at the decision time."""

    typed_priority: str | None = None
    customer_tier: str | None = None
    sla_breached: bool | None = None
    hours_since_update: float | None = None
    hours_since_customer_message: float | None = None


NO_FACTS = TicketFacts()


def _hours(later: datetime, earlier: object) -> float | None:
    moment = as_utc(earlier)
    return None if moment is None else (later - moment).total_seconds() / 3600.0


def as_utc(value: object) -> datetime | None:
    """A datetime or ISO 8601 string as an aware datetime (naive = UTC); None for None or ''."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def describe_ticket(ticket: dict, now: datetime, last_update_at: object = None) -> TicketFacts:
    """A canonical ticket's facts at `now` (timezone-aware).

    `last_update_at` is the time of the ticket's latest real update (default: its `event_time`;
    the watcher passes the stored time because it re-scores with event_time = now). The time
    of the customer's latest message is read from `last_customer_message_at` when the state
    carries it."""
    due = as_utc(ticket.get("sla_due_at"))
    return TicketFacts(
        typed_priority=normalize_priority_value(ticket.get("priority")),
        customer_tier=normalize_category(ticket.get("customer_tier")),
        sla_breached=None if due is None else due < now,
        hours_since_update=_hours(now, last_update_at if last_update_at is not None else ticket.get("event_time")),
        hours_since_customer_message=_hours(now, ticket.get("last_customer_message_at")),
    )


_BAND_ORDER = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class TypeRisk:
    """What the per-label models say about a ticket's kinds of escalation (bundle.online_score's
    `types`): the most likely kind, and each kind's band. Unknown (a bundle without typed labels)
    = None / no entry: a rule that asks about it does not match."""

    likely_type: str | None = None
    bands: tuple[tuple[str, str], ...] = ()  # (escalation type, band), sorted by type

    def band_of(self, kind: str) -> str | None:
        return dict(self.bands).get(kind)


NO_TYPES = TypeRisk()


def describe_types(types: dict[str, dict] | None, likely_type: str | None = None) -> TypeRisk:
    """TypeRisk from the scored labels (per label: `escalation_type`, `band`); two labels of one kind
    count with the higher band."""
    bands: dict[str, str] = {}
    for entry in (types or {}).values():
        kind, band = entry.get("escalation_type"), entry["band"]
        if kind is not None and _BAND_ORDER[band] >= _BAND_ORDER.get(bands.get(kind, "low"), 0):
            bands[kind] = band
    return TypeRisk(likely_type, tuple(sorted(bands.items())))


class Condition(BaseModel):
    """Every key given must hold (keys left out match anything). Hours are `at least` thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    band: list[Band] | None = None
    priority: list[Priority] | None = Field(None, description="the model's predicted priority")
    category: list[str] | None = None
    typed_priority: list[TypedPriority] | None = Field(None, description="the priority set on the ticket")
    customer_tier: list[str] | None = None
    sla_breached: bool | None = None
    min_hours_since_update: float | None = Field(None, ge=0)
    min_hours_since_customer_message: float | None = Field(None, ge=0)
    # The escalation type of the most probable typed label (bundles with typed labels only).
    likely_type: list[EscalationType] | None = None
    # Per escalation type, the bands its own model's score must be in (every type listed must match).
    type_band: dict[EscalationType, list[Band]] | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in self.__dict__.values())

    def wanted_typed_priorities(self) -> frozenset[str] | None:
        return None if self.typed_priority is None else frozenset(PRIORITY_ALIASES.get(p, p) for p in self.typed_priority)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    when: Condition = Field(default_factory=Condition)
    then: Action

    def matches(self, band: str, priority: str, category: str | None, facts: TicketFacts = NO_FACTS,
                types: TypeRisk = NO_TYPES) -> bool:
        when = self.when
        typed = when.wanted_typed_priorities()
        return (
            (when.band is None or band in when.band)
            and (when.priority is None or priority in when.priority)
            # categories in normal form, as the model sees them ("Wrong Charge" = "wrong_charge")
            and (when.category is None or normalize_category(category) in {normalize_category(c) for c in when.category})
            and (typed is None or facts.typed_priority in typed)
            and (when.customer_tier is None
                 or facts.customer_tier in {normalize_category(t) for t in when.customer_tier})
            and (when.sla_breached is None or facts.sla_breached is when.sla_breached)
            and _at_least(facts.hours_since_update, when.min_hours_since_update)
            and _at_least(facts.hours_since_customer_message, when.min_hours_since_customer_message)
            and (when.likely_type is None or types.likely_type in when.likely_type)
            and (when.type_band is None
                 or all(types.band_of(kind) in wanted for kind, wanted in when.type_band.items()))
        )


def _at_least(hours: float | None, threshold: float | None) -> bool:
    return threshold is None or (hours is not None and hours >= threshold)


class EscalationMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    rules: list[Rule] = Field(min_length=1)
    _decided: dict[tuple, dict] = PrivateAttr(default_factory=dict)
    _cuts: tuple | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def check_default_last(self) -> EscalationMatrix:
        """A ticket must always get an action: the last rule is the catch-all."""
        if not self.rules[-1].when.is_empty():
            raise ValueError("the last rule must have no `when` (it is the default for every ticket)")
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule name(s): {', '.join(duplicates)}")
        return self

    def decide(self, band: str, priority: str, category: str | None, facts: TicketFacts = NO_FACTS,
               types: TypeRisk = NO_TYPES) -> dict:
        """The first matching rule's action, with the rule's name so a decision can be traced.

        `priority` is the model's predicted priority; `facts` what the ticket itself says at the
        decision time (describe_ticket); `types` the per-label models' view of the ticket
        (describe_types). Decisions are remembered per distinct input (hours as which thresholds
        they reach), so callers must not modify the dict; the memory is bounded because
        categories come from clients."""
        update_cuts, message_cuts = self.__pydantic_private__["_cuts"] or self._find_cuts()
        since_update, since_message = facts.hours_since_update, facts.hours_since_customer_message
        # how many of the (sorted) thresholds each is at least: all a decision can depend on
        key = (band, priority, category, facts.typed_priority, facts.customer_tier, facts.sla_breached,
               -1 if since_update is None else bisect_right(update_cuts, since_update),
               -1 if since_message is None else bisect_right(message_cuts, since_message), types)
        remembered = self.__pydantic_private__["_decided"]  # plain dict access; `self._decided` is slower
        decided = remembered.get(key)
        if decided is not None:
            return decided
        for rule in self.rules:
            if rule.matches(band, priority, category, facts, types):
                decided = {**rule.then.model_dump(), "rule": rule.name}
                if len(remembered) < 4096:
                    remembered[key] = decided
                return decided
        raise AssertionError("unreachable: the last rule matches everything")

    def _find_cuts(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The hour thresholds the rules use: a decision depends on hours only through them."""
        cuts = (tuple(sorted({r.when.min_hours_since_update for r in self.rules} - {None})),
                tuple(sorted({r.when.min_hours_since_customer_message for r in self.rules} - {None})))
        self.__pydantic_private__["_cuts"] = cuts
        return cuts


def load_policy(path: Path) -> EscalationMatrix:
    """Read and validate the matrix; every problem is reported with its location in the file."""
    return load_yaml_model(Path(path), EscalationMatrix, "escalation matrix", PolicyError)
