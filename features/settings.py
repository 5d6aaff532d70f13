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

    @field_validator("api_keys", mode="before")
    @classmethod
    def split_api_keys(cls, value: object) -> object:
        """ESCALATION_RISK_API_KEYS=key1,key2 (blank entries dropped)."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

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
