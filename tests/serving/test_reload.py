"""Hot reload: the new model is verified before the swap; a failed reload keeps the old model."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests.serving.conftest import ADMIN_KEY, AUTH, make_settings
from training.packaging import point_current, write_bundle

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture()
def models_dir(serving_models_dir, small_result, tmp_path):
    """A private models/ (v1 current, plus a v2 bundle of the same model) to repoint freely."""
    target = tmp_path / "models"
    target.mkdir()
    shutil.copytree(serving_models_dir / "v1-small", target / "v1-small")
    write_bundle(small_result, target, "v2-small")
    point_current(target, target / "v1-small")
    return target


def make_client(models_dir, **overrides):
    from serving import create_app

    app = create_app(make_settings(models_dir, **overrides))
    return app, app.test_client()


def test_reload_swaps_to_the_new_bundle(models_dir, wire_tickets):
    app, client = make_client(models_dir)
    point_current(models_dir, models_dir / "v2-small")
    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json()["version"] == "v2-small"
    assert client.get("/v1/model", headers=AUTH).get_json()["version"] == "v2-small"
    assert 'escalation_risk_model_info{version="v2-small"} 1.0' in client.get("/metrics").get_data(as_text=True)
    assert client.post("/v1/score", json=wire_tickets[0], headers=AUTH).status_code == 200


def test_failed_reload_keeps_the_old_model_serving(models_dir, wire_tickets):
    app, client = make_client(models_dir)
    before = client.post("/v1/score", json=wire_tickets[0], headers=AUTH).get_json()
    with open(models_dir / "v2-small" / "escalation_model.txt", "a") as handle:
        handle.write("\n# tampered\n")
    point_current(models_dir, models_dir / "v2-small")

    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == 409
    body = response.get_json()
    assert body["reloaded"] is False
    assert "sha256 mismatch in escalation_model.txt" in body["error"]

    assert app.extensions["model"].bundle.path == (models_dir / "v1-small").resolve()
    after = client.post("/v1/score", json=wire_tickets[0], headers=AUTH).get_json()
    assert after["escalation"] == before["escalation"]
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and "sha256 mismatch" in ready["last_reload_error"]
    assert "sha256 mismatch" in client.get("/v1/model", headers=AUTH).get_json()["last_reload_error"]
    assert 'escalation_risk_model_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").get_data(as_text=True)


def test_sighup_reloads_the_model(models_dir):
    from serving.app import install_sighup_reload

    app, _ = make_client(models_dir)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        install_sighup_reload(app)
        point_current(models_dir, models_dir / "v2-small")
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 20
        while app.extensions["model"].bundle.path != (models_dir / "v2-small").resolve():
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_polling_picks_up_a_new_current_bundle(models_dir):
    app, _ = make_client(models_dir, reload_poll_seconds=0.1)
    holder = app.extensions["model"]
    try:
        point_current(models_dir, models_dir / "v2-small")
        deadline = time.monotonic() + 20
        while holder.bundle.path != (models_dir / "v2-small").resolve():
            assert time.monotonic() < deadline, "polling did not reload the model"
            time.sleep(0.05)
    finally:
        holder.stop_polling()


def test_unreachable_mlflow_falls_back_to_the_local_bundle(models_dir, tmp_path, caplog):
    """With a tracking store that has no champion, the service warns and serves models/current."""
    with caplog.at_level("WARNING", logger="escalation_risk.serving"):
        app, client = make_client(models_dir, mlflow_tracking_uri=(tmp_path / "no_mlruns").as_uri())
    assert client.get("/readyz").get_json()["version"] == "v1-small"
    assert "falling back to the local bundle" in caplog.text
    assert app.extensions["model"].source == str(models_dir / "current")
