"""The console script as a user meets it: help, clear errors with exit codes, batch scoring."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

CLI = [sys.executable, "-m", "cli"]


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize("command", [[], ["generate-data"], ["train"], ["score"], ["audit-data"], ["report"]])
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_generate_data_writes_csv(tmp_path):
    out = tmp_path / "events.csv"
    result = run_cli("generate-data", "--tickets", "200", "--format", "csv", "--output", str(out))
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert frame["ticket_id"].nunique() == 200


def test_bad_params_file_names_the_field(tmp_path, params_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(params_path.read_text().replace("  train: 0.70", "  train: 0.90"))
    result = run_cli("train", "--params", str(bad), "--data", str(tmp_path / "none.parquet"), cwd=tmp_path)
    assert result.returncode == 2
    assert "split" in result.stderr and "must be 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_file_is_a_clear_error(tmp_path):
    result = run_cli("train", "--data", str(tmp_path / "missing.parquet"), "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 2
    assert "event log not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_then_score_batch(small_events_path, tmp_path):
    env = os.environ | {"ESCALATION_RISK_PROJECT_DIR": str(tmp_path)}
    trained = run_cli("train", "--data", str(small_events_path), "--no-mlflow", cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    assert "ROC-AUC" in trained.stdout
    assert (tmp_path / "models" / "current").is_symlink()
    version = (tmp_path / "models" / "current").resolve().name
    assert (tmp_path / "reports" / version / "report.html").is_file(), "train writes the ops leads' report"
    events = pd.read_parquet(small_events_path)
    open_rows = events[events.status != "closed"].groupby("ticket_id").tail(1).head(300)
    open_rows.to_parquet(tmp_path / "open.parquet")
    out = tmp_path / "scores.parquet"
    scored = run_cli("score", "--input", str(tmp_path / "open.parquet"), "--output", str(out), cwd=tmp_path, env=env)
    assert scored.returncode == 0, scored.stderr
    frame = pd.read_parquet(out)
    assert len(frame) == open_rows["ticket_id"].nunique()
    assert frame["escalation_probability"].between(0, 1).all()
    assert Path(tmp_path / "reports" / "rejects.csv").exists()


def test_locked_mlflow_store_is_found_before_training(small_events_path, tmp_path):
    """Another process holds mlflow.db locked: exit 2 naming it, before any training work."""
    import sqlite3

    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("CREATE TABLE held (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        env = os.environ | {"ESCALATION_RISK_PROJECT_DIR": str(tmp_path)}
        env.pop("MLFLOW_TRACKING_URI", None)
        result = run_cli("train", "--data", str(small_events_path), cwd=tmp_path, env=env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2, result.stderr
    assert "locked by another process" in result.stderr and "before training" in result.stderr
    assert "Traceback" not in result.stderr and "ROC-AUC" not in result.stdout
    assert not (tmp_path / "models").exists()


def test_unwritable_artifact_folder_is_found_before_training(small_events_path, tmp_path):
    """The artifact location cannot take files (here a file stands where the folder should be)."""
    (tmp_path / "mlartifacts").write_text("not a folder")
    env = os.environ | {"ESCALATION_RISK_PROJECT_DIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli("train", "--data", str(small_events_path), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "artifact folder" in result.stderr and "mlartifacts" in result.stderr
    assert "Traceback" not in result.stderr and "ROC-AUC" not in result.stdout


def test_export_without_a_required_column_names_the_file_and_column(tmp_path):
    data = tmp_path / "nocreated.csv"
    data.write_text("ticket_id,event_time\nT1,2026-01-01T00:00:00\n")
    result = run_cli("train", "--data", str(data), "--no-mlflow", cwd=tmp_path)
    assert result.returncode == 2
    assert "nocreated.csv" in result.stderr and "missing required column(s): created_at" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["train", "--no-mlflow"], ["audit-data"]])
def test_a_folder_that_is_not_a_parquet_dataset_is_a_clear_error(tmp_path, command):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "bad.csv").write_text("ticket_id,event_time,created_at\nT1,2026-01-02,2026-01-01\n")
    result = run_cli(*command, "--data", str(folder), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "exports is a directory, read as one Parquet dataset" in result.stderr
    assert "Traceback" not in result.stderr
