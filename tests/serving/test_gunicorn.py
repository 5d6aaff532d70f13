"""The service under a real gunicorn (serving/gunicorn.conf.py) on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import ADMIN_KEY, API_KEY
from training.packaging import point_current, write_bundle

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: object | None = None, headers: dict | None = None, data: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, dict, dict]:
    payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture(scope="module")
def server(serving_models_dir, small_result, tmp_path_factory):
    """gunicorn with 2 threaded workers; models/ is a private copy so the test can repoint it."""
    models_dir = tmp_path_factory.mktemp("gunicorn_models")
    shutil.copytree(serving_models_dir / "v1-small", models_dir / "v1-small")
    write_bundle(small_result, models_dir, "v2-small")
    point_current(models_dir, models_dir / "v1-small")
    port = free_port()
    env = {**os.environ, "ESCALATION_RISK_MODELS_DIR": str(models_dir), "ESCALATION_RISK_PORT": str(port),
           "ESCALATION_RISK_HOST": "127.0.0.1", "ESCALATION_RISK_API_KEYS": API_KEY,
           "ESCALATION_RISK_ADMIN_KEY": ADMIN_KEY, "ESCALATION_RISK_WORKERS": "2",
           "ESCALATION_RISK_MAX_BODY_BYTES": "262144"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = tmp_path_factory.mktemp("gunicorn_log") / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:create_served_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    # every worker has its model (one log line each), not just the first to answer
                    if call(f"{base}/readyz")[0] == 200 and log_path.read_text().count('"model loaded') == 2:
                        break
                except (urllib.error.URLError, ConnectionError):
                    pass
                assert time.monotonic() < deadline, "gunicorn did not become ready:\n" + log_path.read_text()
                time.sleep(0.2)
            yield {"base": base, "process": process, "models_dir": models_dir, "log": log_path}
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_scores_over_real_http(server, wire_tickets):
    status, body, headers = call(f"{server['base']}/v1/score", wire_tickets[0], AUTH)
    assert status == 200
    assert body["ticket_id"] == wire_tickets[0]["ticket_id"]
    assert body["model"]["version"] == "v1-small"
    assert headers["Content-Type"] == "application/json"
    status, body, _ = call(f"{server['base']}/v1/score", {"tickets": wire_tickets[:100]}, AUTH)
    assert status == 200 and len(body["scores"]) == 100


def test_errors_over_real_http_are_json(server, wire_tickets):
    base = server["base"]
    assert call(f"{base}/v1/score", wire_tickets[0])[0] == 401
    assert call(f"{base}/v1/nothing", {}, AUTH)[0] == 404
    assert call(f"{base}/v1/score", headers=AUTH)[0] in (405, 415)  # GET without body
    assert call(f"{base}/v1/score", data=b"x" * 300_000, headers=AUTH)[0] == 413
    assert call(f"{base}/v1/score", data=b"{", headers=AUTH)[0] == 400
    assert call(f"{base}/v1/score", data=b"a=1", headers=AUTH, content_type="text/plain")[0] == 415
    status, body, _ = call(f"{base}/v1/score", {"ticket_id": "A"}, AUTH)
    assert status == 422 and {d["field"] for d in body["details"]} == {"event_time", "created_at"}
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    assert "escalation_risk_requests_total" in metrics


def wait_for_version(base: str, version: str, attempts: int = 150) -> set[str]:
    """Versions seen across workers (requests spread over both) until all say `version`."""
    seen: set[str] = set()
    for _ in range(attempts):
        seen = {call(f"{base}/v1/model", headers=AUTH)[1]["version"] for _ in range(6)}
        if seen == {version}:
            break
        time.sleep(0.2)
    return seen


def test_sighup_reloads_every_worker_and_a_bad_bundle_keeps_the_old_model(server):
    base, models_dir = server["base"], server["models_dir"]
    broken = models_dir / "v3-broken"
    shutil.copytree(models_dir / "v2-small", broken)
    (broken / "priority_model.txt").write_text("not a model")
    point_current(models_dir, broken)
    server["process"].send_signal(signal.SIGHUP)
    time.sleep(3)
    status, body, _ = call(f"{base}/readyz")
    assert status == 200 and body["version"] == "v1-small"
    assert wait_for_version(base, "v1-small", attempts=3) == {"v1-small"}

    point_current(models_dir, models_dir / "v2-small")
    server["process"].send_signal(signal.SIGHUP)
    assert wait_for_version(base, "v2-small") == {"v2-small"}
    assert server["process"].poll() is None


def read_metrics(base: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def score_count(metrics: dict) -> float:
    key = ("escalation_risk_requests_total",
           tuple(sorted({"endpoint": "/v1/score", "method": "POST", "status": "200"}.items())))
    return metrics.get(key, 0.0)


def test_metrics_add_up_every_worker(server, wire_tickets):
    """/metrics counts the requests of both workers, whichever worker answers the scrape."""
    base = server["base"]
    before = score_count(read_metrics(base))
    for ticket in wire_tickets[:20]:
        assert call(f"{base}/v1/score", ticket, AUTH)[0] == 200
    scrapes = [read_metrics(base) for _ in range(6)]
    assert {score_count(m) for m in scrapes} == {before + 20}
    pids = {dict(labels)["pid"] for m in scrapes for (name, labels) in m
            if name == "escalation_risk_model_info" and dict(labels).get("pid")}
    assert len(pids) == 2, f"expected the model gauge of both workers, got pids {pids}"
    bands = sum(v for (name, _), v in scrapes[0].items() if name == "escalation_risk_scores_total")
    assert bands >= 20
