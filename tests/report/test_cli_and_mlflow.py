"""`escalation-risk report` from a bundle, and the report logged with the MLflow run it describes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from bundle.report import REPORT_FILES, REPORT_SOURCE, write_report
from features.settings import Settings
from tests.report.conftest import VERSION
from training.packaging import make_version, write_bundle
from training.registry import log_and_register

CLI = [sys.executable, "-m", "cli"]


def run_cli(*args, cwd, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_report_command_regenerates_from_the_bundle(report_models_dir, report_json, tmp_path):
    env = os.environ | {"ESCALATION_RISK_PROJECT_DIR": str(tmp_path), "ESCALATION_RISK_MODELS_DIR": str(report_models_dir)}
    result = run_cli("report", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "reports" / VERSION
    assert "report: " in result.stdout and "bytes" in result.stdout
    assert sorted(p.name for p in written.iterdir()) == sorted((*REPORT_FILES, REPORT_SOURCE))
    again = json.loads((written / "report.json").read_text())
    assert again["metrics"] == report_json["metrics"] and again["capacity"] == report_json["capacity"]


def test_report_command_names_a_missing_bundle(tmp_path):
    result = run_cli("report", "--model-path", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2
    assert "not a model bundle" in result.stderr and "Traceback" not in result.stderr


def test_report_is_logged_with_its_run_and_matches_the_runs_metrics(small_result, params_path, small_events_path,
                                                                    tmp_path):
    settings = Settings(project_dir=tmp_path, mlflow_tracking_uri=None)
    bundle_dir = write_bundle(small_result, tmp_path / "models", make_version(small_result))
    report_dir = write_report(bundle_dir, tmp_path / "reports" / bundle_dir.name)["dir"]
    registration = log_and_register(small_result, bundle_dir, settings, params_path, small_events_path, report_dir)
    client = MlflowClient(settings.resolved_tracking_uri)
    logged = {a.path for a in client.list_artifacts(registration.run_id, "report")}
    assert {f"report/{name}" for name in (*REPORT_FILES, REPORT_SOURCE)} == logged
    local = client.download_artifacts(registration.run_id, "report/report.json", str(tmp_path / "dl"))
    report = json.loads(Path(local).read_text())
    run_metrics = client.get_run(registration.run_id).data.metrics
    assert report["model"]["version"] == bundle_dir.name
    for key, value in report["metrics"]["model"].items():
        assert abs(value - run_metrics[f"test_{key}"]) < 1e-9, key
