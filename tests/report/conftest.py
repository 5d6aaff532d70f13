"""Report fixtures: the session's small model as a bundle, its report, and a service that serves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundle.report import write_report
from features.settings import Settings
from training.packaging import point_current, write_bundle

VERSION = "v1-report"


@pytest.fixture(scope="session")
def report_models_dir(small_result, tmp_path_factory) -> Path:
    models_dir = tmp_path_factory.mktemp("report_project") / "models"
    point_current(models_dir, write_bundle(small_result, models_dir, VERSION))
    return models_dir


@pytest.fixture(scope="session")
def report_written(report_models_dir) -> dict:
    return write_report(report_models_dir / VERSION, report_models_dir.parent / "reports" / VERSION)


@pytest.fixture(scope="session")
def report_json(report_written) -> dict:
    return json.loads((report_written["dir"] / "report.json").read_text())


@pytest.fixture(scope="session")
def report_html(report_written) -> str:
    return (report_written["dir"] / "report.html").read_text()


def make_report_settings(models_dir: Path, **overrides) -> Settings:
    values = dict(project_dir=models_dir.parent, models_dir=models_dir, reports_dir=models_dir.parent / "reports",
                  mlflow_tracking_uri=None, api_keys=[])
    return Settings(**(values | overrides))
