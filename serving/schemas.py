"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from features.schema import PRIORITY_ALIASES, PRIORITY_ORDER

PRIORITY_VALUES = (*PRIORITY_ORDER, *PRIORITY_ALIASES)
MIN_YEAR, MAX_YEAR = 1900, 2200
# Names of an importer's extra log columns (a mapping's `extra:`, e.g. opened_by, location).
ExtraName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ExtraValue = Annotated[str, StringConstraints(max_length=256)]
# Counters so far (messages, reassignments, reopenings, escalation level): whole numbers 0..COUNTER_MAX,
# as numbers, whole floats (3.0) or digit strings ("3"). A larger value is a client bug, answered 422.
COUNTER_MAX = 1_000_000


def refuse_booleans(value: object) -> object:
    """JSON true/false are not counts (pydantic's lax integers would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true/false")
    return value


Count = Annotated[int, BeforeValidator(refuse_booleans), Field(ge=0, le=COUNTER_MAX)]


class Ticket(BaseModel):
    """One canonical ticket (DESIGN.md): its state right after its latest update."""

    # Ticketing systems send ids as numbers or strings (opaque strings here), and counters as 3.0
    # (whole floats pass lax int validation); both without Python validators on the hot path.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    ticket_id: str = Field(min_length=1, description="the ticketing system's id")
    event_time: datetime = Field(description="time of this update (ISO 8601; naive = UTC)")
    created_at: datetime
    event_type: str | None = None
    channel: str | None = Field(None, description="phone, email, chat, web, social, ...")
    category: str | None = None
    subcategory: str | None = None
    priority: str | None = Field(None, description="low, normal, high, urgent or P1..P4")
    customer_id: str | None = None
    customer_tier: str | None = Field(None, description="standard, gold, vip, ...")
    agent_id: str | None = None
    group: str | None = None
    status: str | None = None
    subject: str | None = None
    description: str | None = None
    last_customer_message: str | None = None
    reassignment_count: Count | None = None
    reopen_count: Count | None = None
    customer_messages: Count | None = None
    agent_messages: Count | None = None
    sla_due_at: datetime | None = None
    escalation_level: Count | None = None
    extra: dict[ExtraName, ExtraValue | None] | None = Field(
        None, max_length=50,
        description="coded fields beyond the canonical ones that the model was trained with (an import "
                    "mapping's `extra:` columns, e.g. opened_by, location, symptom, impact); numbers are "
                    "read as text; names the model does not use are ignored")

    @field_validator("event_time", "created_at", "sla_due_at")
    @classmethod
    def assume_utc(cls, value: datetime | None) -> datetime | None:
        """Naive times are UTC, as in training (features.schema.parse_times); years stay in a sane range
        (a ticket from year 1 or 9999 is a client bug, and would overflow time arithmetic)."""
        if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"time {value.isoformat()} is outside the supported years {MIN_YEAR}..{MAX_YEAR}")
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def check_update_after_creation(self) -> Ticket:
        if self.event_time < self.created_at:
            raise ValueError("event_time is before created_at")
        return self

    @field_validator("priority")
    @classmethod
    def check_priority(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in PRIORITY_VALUES:
            raise ValueError(f"unknown priority {value!r}; expected one of {', '.join(PRIORITY_VALUES)}")
        return value


class TicketBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickets: list[Ticket] = Field(min_length=1)


class Reason(BaseModel):
    feature: str
    label: str
    value: Any = None
    effect: float = Field(description="contribution to the raw score (log-odds)")
    direction: str


class Escalation(BaseModel):
    probability: float
    band: str
    escalate_now: bool
    reasons: list[Reason]


class PriorityPrediction(BaseModel):
    predicted: str
    probabilities: dict[str, float]


class ActionOut(BaseModel):
    route_to: str
    tier: str
    escalation_type: str
    respond_within: float = Field(description="hours")
    rule: str


class ModelRef(BaseModel):
    name: str
    version: str


class Score(BaseModel):
    ticket_id: str
    escalation: Escalation
    priority: PriorityPrediction
    action: ActionOut
    model: ModelRef
    scored_at: datetime
    warnings: list[str] = Field([], description="what the service ignored, e.g. text past the characters "
                                                "the features read per field")


class ScoreBatch(BaseModel):
    scores: list[Score]


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] = []
    request_id: str | None = None
