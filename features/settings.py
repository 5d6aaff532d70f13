"""The one place that reads the environment; everything else takes a Settings object."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Paths and service locations, from ESCALATION_RISK_* variables (and MLFLOW_TRACKING_URI)."""

    model_config = SettingsConfigDict(env_prefix="ESCALATION_RISK_", extra="ignore")

    project_dir: Path = Field(default_factory=Path.cwd)
    data_path: Path | None = None
    params_path: Path | None = None
    models_dir: Path | None = None
    reports_dir: Path | None = None
    servicenow_path: Path | None = None
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "ESCALATION_RISK_MLFLOW_TRACKING_URI"),
    )
    mlflow_experiment: str = "escalation-risk"
    registered_model_name: str = "escalation-risk"
    # Scoring service (serving/). Keys are secrets: never logged, compared in constant time.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # comma-separated in the env
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 4
    max_batch: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024
    # A request must arrive whole (headers and body) within this many seconds (serving/worker.py).
    request_read_timeout: float = Field(10.0, gt=0)
    # Heavy scoring requests (bodies of 64 KiB or more: batches) one worker runs at once; more are
    # answered 503 with Retry-After at once, so health checks always find a free thread.
    # 0 = threads - 1 (at least 1). Single tickets are never shed (serving/app.py).
    scoring_slots: int = Field(0, ge=0)
    policy_path: Path | None = None
    model_path: Path | None = None
    reload_poll_seconds: float = 0.0
    # Set by serving/gunicorn.conf.py for its workers (prometheus_client reads it at import too).
    prometheus_multiproc_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    reasons: Literal["path", "shap"] = "path"  # how reasons are computed (bundle/contributions.py)
    zendesk_webhook_secret: str | None = None
    zendesk_replay_window_seconds: int = 300
    # Ticket store (serving/store/): SQLite file by default, PostgreSQL by URL when shared.
    store_url: str | None = None
    state: Literal["on", "off"] = "on"  # off: the stateless service (nothing recorded, history as trained)
    text_retention_days: float = Field(default=30.0, gt=0)  # ticket text kept this long, then dropped
    store_busy_timeout_seconds: float = Field(default=5.0, ge=0)  # SQLite: wait this long for a lock, then 503
    # Queue watch and alerts (serving/watcher.py, serving/alerts.py, serving/delivery.py).
    watch: Literal["on", "off"] = "on"  # `escalation-risk serve` starts the watcher beside gunicorn
    watch_interval_seconds: float = Field(300.0, gt=0)
    watch_batch_size: int = Field(2000, ge=1)
    # Text features the watcher (and replay) keep, one entry per open ticket (~0.7 KB each): above the
    # number of open tickets, a tick computes text features only for texts that changed since the last.
    watch_text_cache_entries: int = Field(150_000, ge=1)
    watch_lease_seconds: float = Field(120.0, gt=0)  # another watcher takes over this long after a crash
    delivery_poll_seconds: float = Field(5.0, gt=0)
    destinations_path: Path | None = None
    # Credentials of alert destinations: secrets, never logged nor written to the store.
    alert_webhook_secret: str | None = None  # HMAC-SHA256 key of the signed JSON webhook
    slack_webhook_url: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: str | None = None
    servicenow_username: str | None = None
    servicenow_password: str | None = None
    freshdesk_api_key: str | None = None
    # The ops view (serving/monitoring.py, /dashboard): how often the live view is recomputed (0 = only
    # when the dashboard finds none), and at most how many ticket updates it computes features for.
    monitoring_interval_seconds: float = Field(600.0, ge=0)
    monitoring_max_rows: int = Field(20_000, ge=100)
    # Vendor integrations (serving/adapters.py). ServiceNow display values are written in the API
    # user's date format(s) and time zone; raw values and the `value` of pairs are UTC.
    servicenow_date_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["yyyy-MM-dd HH:mm:ss"])  # ServiceNow's notation, comma-separated in the env
    servicenow_time_zone: str = "UTC"  # IANA name, e.g. Europe/Berlin
    # Which form of a reference (caller, group, assignee, opened_by, location, ...) the model was
    # trained on: the servicenow mapping imports the export's display names.
    servicenow_references: Literal["display_value", "value"] = "display_value"
    freshdesk_time_zone: str = "UTC"  # the helpdesk's time zone, for placeholder dates without one
    integration_mapping_path: Path | None = None  # where category, tier, ... come from (YAML)

    @field_validator("api_keys", mode="before")
    @classmethod
    def split_api_keys(cls, value: object) -> object:
        """ESCALATION_RISK_API_KEYS=key1,key2 (blank entries dropped)."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("servicenow_date_formats", mode="before")
    @classmethod
    def split_date_formats(cls, value: object) -> object:
        """ESCALATION_RISK_SERVICENOW_DATE_FORMATS=dd/MM/yyyy HH:mm:ss,yyyy-MM-dd HH:mm:ss (tried in order)."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("servicenow_time_zone", "freshdesk_time_zone")
    @classmethod
    def check_time_zone(cls, value: str) -> str:
        """An IANA time zone name the zoneinfo database knows."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; expected an IANA name such as Europe/Berlin") from exc
        return value

    @property
    def resolved_integration_mapping_path(self) -> Path:
        default = Path(__file__).resolve().parent.parent / "serving" / "integration_mapping.yaml"
        return self.integration_mapping_path or default

    @property
    def resolved_store_url(self) -> str:
        """The ticket store: ESCALATION_RISK_STORE_URL, else SQLite at <project>/data/tickets.db."""
        return self.store_url or f"sqlite:///{(self.project_dir / 'data' / 'tickets.db').resolve()}"

    @property
    def resolved_data_path(self) -> Path:
        return self.data_path or self.project_dir / "data" / "demo" / "events.parquet"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.project_dir / "models"

    @property
    def resolved_model_path(self) -> Path:
        return self.model_path or self.resolved_models_dir / "current"

    @property
    def resolved_policy_path(self) -> Path:
        return self.policy_path or Path(__file__).resolve().parent.parent / "serving" / "escalation_matrix.yaml"

    @property
    def resolved_destinations_path(self) -> Path:
        return self.destinations_path or Path(__file__).resolve().parent.parent / "serving" / "destinations.yaml"

    @property
    def resolved_servicenow_path(self) -> Path:
        """The shared real ServiceNow export, read in place (never copied into the project)."""
        default = self.project_dir / ".." / "shared" / "data" / "servicenow" / "incident_event_log.csv.gz"
        return self.servicenow_path or default.resolve()

    @property
    def resolved_reports_dir(self) -> Path:
        return self.reports_dir or self.project_dir / "reports"

    @property
    def resolved_params_path(self) -> Path:
        return self.params_path or Path(__file__).resolve().parent.parent / "training" / "params.yaml"

    @property
    def resolved_tracking_uri(self) -> str:
        """SQLite next to the project unless a tracking server is configured."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.project_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.project_dir / "mlartifacts").resolve().as_uri()
