"""Where alerts go: the destinations file (YAML, validated like the escalation matrix).

```yaml
version: 1
destinations:
  - name: ops-webhook            # unique; appears in each delivery record
    type: webhook                # webhook | slack | zendesk | servicenow | freshdesk
    url: https://hooks.example.com/escalation-risk
    timeout_seconds: 5           # per HTTP request (connect and read)
    retry: {attempts: 3, initial_seconds: 1, max_seconds: 10}   # quick retries inside one round
    give_up_after_hours: 24      # then the delivery is a dead letter (kept, listed, re-drivable)
    redeliver_initial_seconds: 10   # a failed round is tried again after this, doubling up to
    redeliver_max_seconds: 120      # this, until delivered or given up
  - name: zendesk
    type: zendesk
    base_url: https://yourcompany.zendesk.com
```

Credentials are never in this file: they come from Settings (ESCALATION_RISK_ALERT_WEBHOOK_SECRET,
_SLACK_WEBHOOK_URL, _ZENDESK_EMAIL / _ZENDESK_API_TOKEN, _SERVICENOW_USERNAME / _SERVICENOW_PASSWORD,
_FRESHDESK_API_KEY). A bad file stops start-up with a message naming the file, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from features.settings import Settings
from features.yaml_files import load_yaml_model

DestinationType = Literal["webhook", "slack", "zendesk", "servicenow", "freshdesk"]
VENDORS = ("zendesk", "servicenow", "freshdesk")


class DestinationError(ValueError):
    """The destinations file is missing or invalid, or a destination lacks its credentials."""


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=10, description="tries inside one delivery round")
    initial_seconds: float = Field(1.0, ge=0, le=60)
    max_seconds: float = Field(10.0, ge=0, le=300)


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: DestinationType
    url: HttpUrl | None = Field(None, description="webhook and slack: where to POST")
    base_url: HttpUrl | None = Field(None, description="zendesk, servicenow, freshdesk: the instance")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    give_up_after_hours: float = Field(24.0, gt=0)
    redeliver_initial_seconds: float = Field(10.0, gt=0, description="wait before the next round after a failed one")
    redeliver_max_seconds: float = Field(120.0, gt=0, description="... doubling up to this")
    tag: str = Field("escalation_risk_alert", min_length=1, max_length=80, description="zendesk: the tag added")

    @model_validator(mode="after")
    def check_address(self) -> Destination:
        if self.type in VENDORS and self.base_url is None:
            raise ValueError(f"a {self.type} destination needs base_url (the instance's address)")
        if self.type == "webhook" and self.url is None:
            raise ValueError("a webhook destination needs url")
        if self.type not in VENDORS and self.base_url is not None:
            raise ValueError(f"base_url is for zendesk/servicenow/freshdesk; a {self.type} destination takes url")
        return self

    def address(self, settings: Settings) -> str:
        """The URL to call (slack may take its secret URL from Settings)."""
        if self.type == "slack" and self.url is None:
            return settings.slack_webhook_url or ""
        return str(self.url or self.base_url).rstrip("/")


class Destinations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    destinations: list[Destination] = Field(default_factory=list)

    @model_validator(mode="after")
    def check_names(self) -> Destinations:
        names = [d.name for d in self.destinations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate destination name(s): {', '.join(duplicates)}")
        return self

    def by_name(self) -> dict[str, Destination]:
        return {d.name: d for d in self.destinations}


REQUIRED_CREDENTIALS = {
    "webhook": ("alert_webhook_secret",),
    "zendesk": ("zendesk_email", "zendesk_api_token"),
    "servicenow": ("servicenow_username", "servicenow_password"),
    "freshdesk": ("freshdesk_api_key",),
}


def load_destinations(path: Path, settings: Settings) -> Destinations:
    """Read and validate the file; a destination whose credentials are not configured is an error too
    (named by destination and environment variable, never by value)."""
    destinations = load_yaml_model(Path(path), Destinations, "destinations file", DestinationError)
    missing = []
    for destination in destinations.destinations:
        for field in REQUIRED_CREDENTIALS.get(destination.type, ()):
            if not getattr(settings, field):
                missing.append(f"{destination.name} ({destination.type}) needs ESCALATION_RISK_{field.upper()}")
        if destination.type == "slack" and destination.url is None and not settings.slack_webhook_url:
            missing.append(f"{destination.name} (slack) needs url or ESCALATION_RISK_SLACK_WEBHOOK_URL")
    if missing:
        raise DestinationError(f"destinations file {path}: missing credentials: {'; '.join(missing)}")
    return destinations
