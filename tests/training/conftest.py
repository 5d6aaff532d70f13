from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dask_trained(small_events_path, postgres_tracking_uri, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`escalation-risk train --engine dask` on a 2-worker LocalCluster, logging to the PostgreSQL-backed server."""
    project = tmp_path_factory.mktemp("dask_project")
    env = os.environ | {"ESCALATION_RISK_PROJECT_DIR": str(project), "MLFLOW_TRACKING_URI": postgres_tracking_uri}
    run = subprocess.run([sys.executable, "-m", "cli", "train", "--engine", "dask", "--workers", "2",
                          "--data", str(small_events_path)],
                         capture_output=True, text=True, cwd=project, env=env, timeout=1200)
    return run, project
