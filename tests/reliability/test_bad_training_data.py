"""Corrupt rows in a ticket export: written to the rejects file with reasons and counted in the MLflow run;
above the threshold training stops with a clear error, registers nothing, and the champion stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

N_EACH = 15
REASONS = {
    "unparseable or missing time",
    "negative counter",
    "duplicate update (same ticket and time)",
    "missing ticket id",
    "event before ticket creation",
    "not a number",
}


def corrupt(events: pd.DataFrame, n_each: int, seed: int = 3) -> pd.DataFrame:
    """n_each rows of each kind of corruption, on distinct rows, plus n_each exact duplicate events."""
    frame = events.astype(object).copy()
    rows = frame.sample(n=6 * n_each, random_state=seed).index
    bad_time, negative, no_id, early, wrong_type, duplicated = (rows[i * n_each:(i + 1) * n_each] for i in range(6))
    frame.loc[bad_time, "event_time"] = "32/13/2025 25:61"
    frame.loc[negative, "reassignment_count"] = -2
    frame.loc[no_id, "ticket_id"] = None
    frame.loc[early, "event_time"] = (pd.to_datetime(events.loc[early, "created_at"]) - pd.Timedelta(days=3)).astype(object)
    frame.loc[wrong_type, "customer_messages"] = "many"
    return pd.concat([frame, frame.loc[duplicated]], ignore_index=True)


def train(data: Path, project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ESCALATION_RISK_PROJECT_DIR": str(project)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "cli", "train", "--data", str(data)], capture_output=True,
                          text=True, cwd=project, env=env, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_corrupt_rows_are_rejected_counted_and_too_many_stop_training(small_events_path, tmp_path):
    events = pd.read_parquet(small_events_path)
    some_bad = tmp_path / "some_bad.csv"
    corrupt(events, N_EACH).to_csv(some_bad, index=False)

    first = train(some_bad, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    rejects = pd.read_csv(tmp_path / "reports" / "rejects.csv")
    assert set(rejects["reason"]) >= REASONS
    assert rejects["row"].nunique() == 6 * N_EACH
    for reason in REASONS:
        assert (rejects["reason"] == reason).sum() >= N_EACH, reason
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("escalation-risk", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.metrics["rows_rejected"] == 6 * N_EACH
    assert run.data.metrics["reject_share"] == pytest.approx(6 * N_EACH / (len(events) + N_EACH))
    summary = Path(client.download_artifacts(champion.run_id, "evaluation/rejects_summary.csv", str(tmp_path)))
    assert set(pd.read_csv(summary)["reason"]) >= REASONS
    current = (tmp_path / "models" / "current").resolve()
    bundles = sorted(p.name for p in (tmp_path / "models").iterdir())

    mostly_bad = tmp_path / "mostly_bad.csv"
    corrupt(events, len(events) // 40, seed=4).to_csv(mostly_bad, index=False)  # ~15 % of rows
    second = train(mostly_bad, tmp_path)
    assert second.returncode == 2
    assert "rows were rejected, more than the allowed 5.0%" in second.stderr
    assert "rejects.csv" in second.stderr and "Traceback" not in second.stderr
    assert len(pd.read_csv(tmp_path / "reports" / "rejects.csv")) > len(rejects)
    versions = client.search_model_versions("name='escalation-risk'")
    assert [v.version for v in versions] == [champion.version]  # nothing registered
    assert client.get_model_version_by_alias("escalation-risk", "champion").version == champion.version
    assert (tmp_path / "models" / "current").resolve() == current
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == bundles
