"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.schema import COUNTER_MAX, PRIORITY_ALIASES, PRIORITY_ORDER

PRIORITY_VALUES = (*PRIORITY_ORDER, *PRIORITY_ALIASES)
MIN_YEAR, MAX_YEAR = 1990, 2200  # a ticket from 1970 is a number read as epoch seconds
# Names of an importer's extra log columns (a mapping's `extra:`, e.g. opened_by, location).
ExtraName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ExtraValue = Annotated[str, StringConstraints(max_length=256)]
# Counters so far (messages, reassignments, reopenings, escalation level): whole numbers 0..COUNTER_MAX
# (features.schema, which validates exports the same way), as numbers, whole floats (3.0) or digit
# strings ("3"). A larger value is a client bug, answered 422.


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

    @field_validator("created_at")
    @classmethod
    def check_update_after_creation(cls, value: datetime, info: ValidationInfo) -> datetime:
        """An update cannot come before its ticket's creation (reported on created_at, naming both)."""
        event_time = info.data.get("event_time")  # absent when event_time itself was invalid
        if event_time is not None and event_time < value:
            raise ValueError("created_at is after event_time: the update cannot come before the ticket's creation")
        return value

    @field_validator("priority")
    @classmethod
    def check_priority(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in PRIORITY_VALUES:
            raise ValueError(f"unknown priority {value!r}; expected one of {', '.join(PRIORITY_VALUES)}")
        return value


class TicketEvent(Ticket):
    """One event of a ticket: a full canonical ticket, or (`partial: true`) only what changed.

    The ticket store merges it onto the ticket's state (serving/store/merge.py): a customer
    message increments customer_messages and becomes last_customer_message, an agent reply
    increments agent_messages, a group change increments reassignment_count, closed -> open
    increments reopen_count, an escalation_level rise is an escalation; a counter sent
    explicitly wins. `created_at` is required only for a ticket the store has not seen."""

    created_at: datetime | None = Field(None, description="required for a ticket the store has not seen yet")
    partial: bool = Field(False, description="true: the event carries only the fields that changed")
    customer_message: str | None = Field(None, description="text of a NEW customer message")
    agent_message: str | None = Field(None, description="text of a NEW public agent reply (text not kept as a feature)")
    escalation_type: str | None = Field(None, description="hierarchical, functional, time_based, priority, "
                                                          "customer_initiated (with an escalation_level rise)")
    source_event_id: str | None = Field(None, max_length=255,
                                        description="the sender's event or delivery id: the same id twice is "
                                                    "recorded once (else the same ticket, time and content)")

    @model_validator(mode="after")
    def check_update_after_creation(self) -> TicketEvent:
        """The store checks event_time against the ticket's creation (sent or stored) and names both fields."""
        return self


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[TicketEvent] = Field(min_length=1)


class TicketBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickets: list[Ticket] = Field(min_length=1)


class Reason(BaseModel):
    feature: str
    label: str
    value: Any = None
    effect: float = Field(description="contribution to the raw score (log-odds)")
    direction: str


class LabelEscalation(BaseModel):
    escalation_type: str | None = Field(description="the kind of escalation the label stands for; null = any kind")
    probability: float
    band: str
    escalate_now: bool
    reasons: list[Reason]


class Escalation(BaseModel):
    probability: float = Field(description="the primary label's calibrated probability")
    band: str
    escalate_now: bool
    reasons: list[Reason]
    # Optional: a duplicate delivery is answered with the score first given, which a model from before
    # escalation types did not include.
    types: dict[str, LabelEscalation] = Field(default_factory=dict, description="per trained label (the primary "
                                              "included), its own probability, band and reasons")
    likely_type: str | None = Field(None, description="the escalation type of the most probable typed label; "
                                                      "null when the model has none")


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


class ScoreWarning(BaseModel):
    """Something about the input worth knowing that did not stop the scoring."""

    field: str = Field(description="the field it concerns (the vendor's name for an integration payload)")
    value: Any = Field(None, description="the value (categories in normal form; for text, its length)")
    message: str = Field(description="what was done with it, e.g. an unknown value scored as 'other'")


class Score(BaseModel):
    ticket_id: str
    escalation: Escalation
    priority: PriorityPrediction | None = Field(
        description="null when the model was trained without a priority target (an export with no priority)")
    action: ActionOut
    model: ModelRef
    scored_at: datetime
    warnings: list[ScoreWarning] = Field(
        default_factory=list,
        description="what the service did with the input that is worth knowing: an unknown vendor value "
                    "passed on or left not set, a value the model was not trained on (scored as 'other'), "
                    "text past the characters the features read per field")


class BatchError(BaseModel):
    index: int = Field(description="position of the ticket in the request's list (0-based)")
    ticket_id: str | None = Field(description="the ticket_id sent with it, when there was one")
    field: str = Field(description="the bad field of that ticket")
    message: str


class ScoreBatch(BaseModel):
    """A batch's answer: 200 when at least one ticket scored (a 422 when none did)."""

    results: list[Score] = Field(description="the valid tickets' scores, in request order")
    errors: list[BatchError] = Field(description="one entry per bad field of each ticket that was not scored")
    scores: list[Score] | None = Field(
        None, description="deprecated: `results` again, present only when every ticket scored (the batch "
                          "response before partial batches; `?strict=true` still refuses a whole batch)")


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] = []
    request_id: str | None = None


ACK_NOTE_MAX = 4000  # characters of an acknowledgement's note (the API and the dashboard's form)


class AlertAck(BaseModel):
    """POST /v1/alerts/{id}/ack: who acted on the alert, their verdict and a note."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=255, description="who acknowledges (name or e-mail)")
    verdict: Literal["acting", "agree", "disagree", "already_handled"] = Field(
        description="acting: escalating or acting on it now; agree: the risk is real; disagree: a false alarm; "
                    "already_handled: someone already dealt with it")
    note: str | None = Field(None, max_length=ACK_NOTE_MAX)


class AlertEventOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="raised, risen_again, fell_below, delivered, delivery_failed, dead_letter, "
                                  "acknowledged or outcome")
    time: datetime


class Alert(BaseModel):
    alert_id: int
    ticket_id: str
    rise: int = Field(description="1 for the ticket's first rise above the line, then 2, ...")
    trigger: Literal["escalate_now", "band_high"]
    status: Literal["open", "acknowledged", "closed"]
    raised_at: datetime
    probability: float
    band: str
    reasons: list[Reason]
    action: ActionOut
    route_to: str | None
    team: str | None = Field(description="the ticket's group when the alert was raised")
    due_at: datetime | None = Field(description="raised_at + the action's respond_within")
    acknowledgement: dict | None
    outcome: Literal["escalated", "closed_without_escalation"] | None
    timeline: list[AlertEventOut] = []


class AlertPage(BaseModel):
    alerts: list[Alert]
    total: int
    limit: int
    offset: int
class Feedback(BaseModel):
    """What someone says about a ticket's score (POST /v1/feedback), stored with the score it judges."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    ticket_id: str = Field(min_length=1, max_length=255, description="a ticket the service has scored")
    verdict: Literal["agree", "disagree"] = Field(description="agree or disagree with the ticket's current risk")
    outcome: Literal["escalated", "not_escalated"] | None = Field(
        None, description="the true outcome, when known: training can fold it in (escalation-risk store export)")
    escalation_type: str | None = Field(None, max_length=64, description="hierarchical, functional, time_based, "
                                                                         "priority, customer_initiated, ...")
    escalated_at: datetime | None = Field(None, description="when it escalated, if known (ISO 8601; naive = UTC)")
    who: str | None = Field(None, max_length=255, description="who gives the feedback")
    note: str | None = Field(None, max_length=2000)

    @field_validator("escalated_at")
    @classmethod
    def assume_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"time {value.isoformat()} is outside the supported years {MIN_YEAR}..{MAX_YEAR}")
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def check_outcome_fields(self) -> Feedback:
        if (self.escalation_type is not None or self.escalated_at is not None) and self.outcome != "escalated":
            raise ValueError("escalation_type and escalated_at describe an escalation: send outcome \"escalated\"")
        return self
