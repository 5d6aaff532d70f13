"""MLflow for real: a SQLite store, a real `mlflow server` on loopback, and `mlflow models serve`."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.schema import CANONICAL_COLUMNS
from features.settings import Settings
from training.packaging import make_version, write_bundle
from training.registry import log_and_register, to_wire_format
from training.train import train_models

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early:\n{process.stderr.read() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def local_settings(tmp_path) -> Settings:
    return Settings(project_dir=tmp_path, mlflow_tracking_uri=None)


def test_run_logs_params_metrics_artifacts_and_registers_champion(small_result, local_settings, params_path,
                                                                  small_events_path, tmp_path):
    bundle_dir = write_bundle(small_result, tmp_path / "models", make_version(small_result))
    reg = log_and_register(small_result, bundle_dir, local_settings, params_path, small_events_path)
    assert reg.champion and reg.reason == "no champion yet"
    client = MlflowClient(local_settings.resolved_tracking_uri)
    run = client.get_run(reg.run_id)
    assert run.data.params["data.fingerprint"] == small_result.data_fingerprint
    assert run.data.params["escalation_model.learning_rate"] == str(small_result.params.escalation_model.learning_rate)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(small_result.metrics["test_roc_auc"])
    for label in small_result.labels:  # every label's metrics, beside the primary's unprefixed ones
        assert run.data.metrics[f"label.{label.name}.test_roc_auc"] == pytest.approx(label.metrics["test_roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(reg.run_id, "evaluation")}
    assert {"evaluation/feature_importance.csv", "evaluation/priority_confusion_matrix.csv",
            "evaluation/rejects_summary.csv"} <= artifacts
    assert {f"evaluation/feature_importance.{label.name}.csv" for label in small_result.labels[1:]} <= artifacts
    assert [a.path for a in client.list_artifacts(reg.run_id, "config")] == ["config/params.yaml"]
    assert str(client.get_model_version_by_alias("escalation-risk", "champion").version) == reg.model_version
    mlflow.set_tracking_uri(local_settings.resolved_tracking_uri)
    model = mlflow.pyfunc.load_model("models:/escalation-risk@champion")
    rows = small_result.snapshots[small_result.snapshots.split == "test"][list(CANONICAL_COLUMNS)].head(5)
    scored = model.predict(to_wire_format(rows))
    assert scored["escalation_probability"].between(0, 1).all()
    assert json.loads(scored["reasons"].iloc[0])[0]["feature"]
    assert {f"escalation_probability__{label.name}" for label in small_result.labels} <= set(scored.columns)


def test_pyfunc_takes_what_pandas_gives(small_result, local_settings, params_path, small_events_path, tmp_path):
    """In process, as through `mlflow models serve`: a frame from read_csv (integer ticket ids and
    counters, times as text), datetime64 times and the project's own events Parquet all score."""
    bundle_dir = write_bundle(small_result, tmp_path / "models", make_version(small_result))
    log_and_register(small_result, bundle_dir, local_settings, params_path, small_events_path)
    mlflow.set_tracking_uri(local_settings.resolved_tracking_uri)
    model = mlflow.pyfunc.load_model("models:/escalation-risk@champion")

    events = pd.read_parquet(small_events_path).head(40)  # datetime64[ns, UTC] times, text as strings
    from_parquet = model.predict(events)
    assert len(from_parquet) == 40 and from_parquet["escalation_probability"].between(0, 1).all()
    expected = model.predict(to_wire_format(events[list(CANONICAL_COLUMNS)]))["escalation_probability"]
    assert from_parquet["escalation_probability"].tolist() == expected.tolist()

    csv = events.assign(ticket_id=pd.factorize(events["ticket_id"])[0] + 1000)
    csv.to_csv(tmp_path / "tickets.csv", index=False)
    from_csv = pd.read_csv(tmp_path / "tickets.csv")
    assert from_csv["ticket_id"].dtype == "int64" and from_csv["customer_messages"].dtype == "int64"
    scored = model.predict(from_csv)
    assert scored["ticket_id"].tolist() == [str(t) for t in from_csv["ticket_id"]]
    naive = from_csv.assign(event_time=pd.to_datetime(from_csv["event_time"]).dt.tz_convert(None),
                            created_at=pd.to_datetime(from_csv["created_at"]).dt.tz_convert(None))
    assert naive["event_time"].dtype.kind == "M"
    assert model.predict(naive)["escalation_probability"].tolist() == scored["escalation_probability"].tolist()


def test_quality_gate_keeps_the_better_champion(small_result, local_settings, params_path, small_events_path,
                                                params, tmp_path):
    first_dir = write_bundle(small_result, tmp_path / "models", "good")
    first = log_and_register(small_result, first_dir, local_settings, params_path, small_events_path)
    weak_params = params.model_copy(deep=True)
    weak_params.escalation_model.n_estimators = 1
    weak_params.escalation_model.num_leaves = 2
    weak_params.registry.min_test_roc_auc = 0.0  # compared with the champion, not stopped by the floor
    weak = train_models(small_events_path, weak_params)
    assert weak.metrics["test_roc_auc"] < small_result.metrics["test_roc_auc"]
    weak_dir = write_bundle(weak, tmp_path / "models", "weak")
    second = log_and_register(weak, weak_dir, local_settings, params_path, small_events_path)
    assert not second.champion
    assert "worse than champion" in second.reason
    client = MlflowClient(local_settings.resolved_tracking_uri)
    assert str(client.get_model_version_by_alias("escalation-risk", "champion").version) == first.model_version
    assert str(client.get_model_version_by_alias("escalation-risk", "challenger").version) == second.model_version
    assert client.get_run(second.run_id).data.tags["promoted_to_champion"] == "False"


def test_gate_never_compares_models_of_another_label_or_source(small_result, local_settings, params_path,
                                                               small_events_path, tmp_path):
    """A model for another ticket system or label is not 'better' on this one's rows: it stays champion."""
    demo = log_and_register(small_result, write_bundle(small_result, tmp_path / "models", "demo"), local_settings,
                            params_path, small_events_path)
    other = log_and_register(small_result, write_bundle(small_result, tmp_path / "models", "other"), local_settings,
                             params_path, small_events_path, data_source="servicenow")
    assert demo.champion and not other.champion
    assert "another label or data source" in other.reason and "ESCALATION_RISK_REGISTERED_MODEL_NAME" in other.reason
    client = MlflowClient(local_settings.resolved_tracking_uri)
    assert str(client.get_model_version_by_alias("escalation-risk", "champion").version) == demo.model_version
    assert '"source": "servicenow"' in client.get_model_version("escalation-risk", other.model_version).tags["target"]
    same = log_and_register(small_result, write_bundle(small_result, tmp_path / "models", "again"), local_settings,
                            params_path, small_events_path)
    assert same.champion and "at least as good as champion" in same.reason


@pytest.mark.mlflow_server
def test_train_against_a_real_tracking_server_and_serve_the_champion(small_events_path, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        uri = f"http://127.0.0.1:{port}"
        env = os.environ | {"MLFLOW_TRACKING_URI": uri, "ESCALATION_RISK_PROJECT_DIR": str(tmp_path),
                            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        trained = subprocess.run([sys.executable, "-m", "cli", "train", "--data", str(small_events_path)],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "promoted to @champion" in trained.stdout
        client = MlflowClient(uri)
        version = client.get_model_version_by_alias("escalation-risk", "champion")
        assert client.get_run(version.run_id).data.metrics["test_roc_auc"] > 0.5
        assert not (tmp_path / "mlflow.db").exists(), "nothing went to the local SQLite store"

        serve_port = free_port()
        serve = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", "models:/escalation-risk@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(serve_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_for(f"http://127.0.0.1:{serve_port}/ping", serve)
            events = to_wire_format(pd.read_parquet(small_events_path)[list(CANONICAL_COLUMNS)].head(3))
            body = json.dumps({"dataframe_split": json.loads(events.to_json(orient="split", index=False))}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{serve_port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                predictions = json.loads(response.read())["predictions"]
            assert len(predictions) == 3
            assert all(0 <= p["escalation_probability"] <= 1 for p in predictions)
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("floor", [{"min_test_roc_auc": 0.99}, {"min_test_positives": 10**6}])
def test_a_model_below_the_quality_floor_is_never_champion_not_even_the_first(small_result, local_settings,
                                                                              params_path, small_events_path,
                                                                              tmp_path, floor):
    strict = small_result.params.model_copy(deep=True)
    for key, value in floor.items():
        setattr(strict.registry, key, value)
    below = dataclasses.replace(small_result, params=strict)
    reg = log_and_register(below, write_bundle(below, tmp_path / "models", "below"), local_settings, params_path,
                           small_events_path)
    assert not reg.champion
    assert "below the quality floor" in reg.reason and next(iter(floor)) in reg.reason
    client = MlflowClient(local_settings.resolved_tracking_uri)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("escalation-risk", "champion")
    assert str(client.get_model_version_by_alias("escalation-risk", "challenger").version) == reg.model_version
