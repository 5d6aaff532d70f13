"""`escalation-risk serve` (what `make serve` runs): a real gunicorn from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from tests.serving.conftest import API_KEY
from tests.serving.test_gunicorn import call, free_port

BIN = Path(sys.executable).parent


def test_serve_without_a_model_exits_2_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ESCALATION_RISK_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(main, ["serve", "--port", "8099"])
    assert result.exit_code == 2
    assert "no model at" in result.output and "escalation-risk train" in result.output
    assert "Traceback" not in result.output


def test_serve_refuses_a_public_bind_without_keys(serving_models_dir, monkeypatch):
    monkeypatch.setenv("ESCALATION_RISK_MODELS_DIR", str(serving_models_dir))
    monkeypatch.setenv("ESCALATION_RISK_API_KEYS", "")
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without API keys" in result.output


def test_serve_starts_gunicorn_that_scores(serving_models_dir, wire_tickets, tmp_path):
    port = free_port()
    env = {**os.environ, "ESCALATION_RISK_MODELS_DIR": str(serving_models_dir), "ESCALATION_RISK_API_KEYS": API_KEY}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(BIN / "escalation-risk"), "serve", "--port", str(port), "--workers", "1"],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if call(f"{base}/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        status, body, _ = call(f"{base}/v1/score", wire_tickets[0], {"X-API-Key": API_KEY})
        assert status == 200 and body["model"]["version"] == "v1-small"
        docs = urllib.request.urlopen(f"{base}/docs", timeout=10).read().decode()
        assert "/v1/score" in docs
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, log_path.read_text()
    assert f"serving on http://127.0.0.1:{port}" in log_path.read_text()
