"""The one place that reads the environment; everything else takes a Settings object."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def resolved_data_path(self) -> Path:
        return self.data_path or self.project_dir / "data" / "demo" / "events.parquet"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.project_dir / "models"

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
