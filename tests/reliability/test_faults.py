"""Faults: bad bundles are refused with a clear message while the old model keeps serving (and at start-up
readiness stays 503); MLflow unreachable at start-up and during training; SIGTERM during load."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bundle.model import write_manifest
from serving.app import close_app
from tests.reliability.conftest import ADMIN, AUTH, V1, V2, service_env
from tests.reliability.harness import LoadRun, free_port, start_service
from tests.serving.conftest import make_settings
from training.packaging import point_current


class Danger:
    """A pickle that would run code when loaded: loading it must never be attempted."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/escalation-risk-pickle-ran",))


def truncate(bundle: Path) -> None:
    model = bundle / "escalation_model.txt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    write_manifest(bundle)  # a consistent manifest: LightGBM itself must notice


def sha_mismatch(bundle: Path) -> None:
    with open(bundle / "priority_model.txt", "a") as handle:
        handle.write("\n")


def missing_file(bundle: Path) -> None:
    (bundle / "history.parquet").unlink()


def incompatible_features(bundle: Path) -> None:
    metadata = json.loads((bundle / "metadata.json").read_text())
    metadata["features"] = [*metadata["features"][1:], "feature_from_another_schema"]
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    write_manifest(bundle)


def pickle_instead_of_model(bundle: Path) -> None:
    (bundle / "escalation_model.txt").write_bytes(pickle.dumps(Danger()))
    write_manifest(bundle)


def executable_instead_of_model(bundle: Path) -> None:
    shutil.copyfile(sys.executable if Path(sys.executable).stat().st_size < 50_000_000 else "/bin/true",
                    bundle / "priority_model.txt")
    write_manifest(bundle)


def pickled_builder(bundle: Path) -> None:
    """An earlier version's bundle: the builder as a pickle (here one that would run code), listed in the manifest."""
    (bundle / "feature_builder.json").unlink()
    (bundle / "feature_builder.npz").unlink()
    (bundle / "feature_builder.joblib").write_bytes(pickle.dumps(Danger()))
    write_manifest(bundle)


def not_a_builder(bundle: Path) -> None:
    (bundle / "feature_builder.json").write_text(json.dumps({"feature_names_": []}))
    write_manifest(bundle)


def unparseable_metadata(bundle: Path) -> None:
    (bundle / "metadata.json").write_text("{not json")
    write_manifest(bundle)


FAULTS = {
    "truncated model file": (truncate, "not a valid LightGBM model"),
    "sha256 mismatch": (sha_mismatch, "sha256 mismatch in priority_model.txt"),
    "missing file": (missing_file, "missing history.parquet"),
    "incompatible feature schema": (incompatible_features, "incompatible feature schema"),
    "pickle instead of LightGBM text": (pickle_instead_of_model, "escalation_model.txt is not a LightGBM text model"),
    "executable instead of LightGBM text": (executable_instead_of_model, "priority_model.txt is not a LightGBM text"),
    "builder state is not a FeatureBuilder's": (not_a_builder, "not a valid feature builder state"),
    "pickled builder (earlier format)": (pickled_builder, "pickles are never loaded"),
    "metadata not JSON": (unparseable_metadata, "metadata.json is not valid JSON"),
}


def broken_bundle(models_dir: Path, fault: str) -> Path:
    bundle = models_dir / f"v3-{fault.replace(' ', '-')}"
    shutil.copytree(models_dir / V2, bundle)
    FAULTS[fault][0](bundle)
    return bundle


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_bundle_is_refused_and_the_old_model_keeps_serving(models_dir, wire_tickets, fault):
    from serving import create_app

    Path("/tmp/escalation-risk-pickle-ran").unlink(missing_ok=True)
    app = create_app(make_settings(models_dir))
    client = app.test_client()
    try:
        point_current(models_dir, broken_bundle(models_dir, fault))
        response = client.post("/v1/admin/reload", headers=ADMIN)
        assert response.status_code == 409
        body = response.get_json()
        assert body["reloaded"] is False and FAULTS[fault][1] in body["error"]
        scored = client.post("/v1/score", json=wire_tickets[0], headers=AUTH)
        assert scored.status_code == 200 and scored.get_json()["model"]["version"] == V1
        ready = client.get("/readyz").get_json()
        assert ready["version"] == V1 and FAULTS[fault][1] in ready["last_reload_error"]
        assert str(models_dir) not in ready["last_reload_error"]  # an open endpoint: no server paths
        assert not Path("/tmp/escalation-risk-pickle-ran").exists()
    finally:
        close_app(app)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_bundle_at_start_up_keeps_readiness_503(models_dir, wire_tickets, fault):
    from serving import create_app

    point_current(models_dir, broken_bundle(models_dir, fault))
    app = create_app(make_settings(models_dir))
    client = app.test_client()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and FAULTS[fault][1] in ready.get_json()["error"]
        assert str(models_dir) not in ready.get_data(as_text=True)
        assert client.get("/healthz").status_code == 200
        scored = client.post("/v1/score", json=wire_tickets[0], headers=AUTH)
        assert scored.status_code == 503 and scored.get_json()["error"] == "model_unavailable"
    finally:
        close_app(app)


def test_no_bundle_at_all_at_start_up_keeps_readiness_503(tmp_path):
    from serving import create_app

    (tmp_path / "models").mkdir()
    app = create_app(make_settings(tmp_path / "models"))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and "no model bundle" in ready.get_json()["error"]


@pytest.mark.timeout(120)
def test_unreachable_tracking_server_at_start_up_serves_the_local_bundle(models_dir, caplog):
    from serving import create_app

    uri = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="escalation_risk.serving"):
        app = create_app(make_settings(models_dir, mlflow_tracking_uri=uri))
    ready = app.test_client().get("/readyz").get_json()
    assert ready["version"] == V1
    assert "is unreachable" in caplog.text and "falling back to the local bundle" in caplog.text


@pytest.mark.timeout(300)
def test_unreachable_tracking_server_during_training_is_a_clear_error(small_events_path, tmp_path):
    models = tmp_path / "models"
    env = {**os.environ, "ESCALATION_RISK_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "cli", "train", "--data", str(small_events_path),
                             "--models-dir", str(models)], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=280)
    assert result.returncode == 2
    assert "is unreachable" in result.stderr and "nothing was registered" in result.stderr
    assert "Traceback" not in result.stderr
    assert not models.exists() or not any(models.iterdir())  # no bundle, no current
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.timeout(300)
def test_sigterm_during_load_lets_in_flight_requests_complete(serving_models_dir, small_result, tmp_path, wire_tickets):
    from tests.reliability.conftest import make_models_dir

    models = make_models_dir(tmp_path / "models", serving_models_dir, small_result)
    # Admission control would shed some of the 8 batches with 503 (tests/reliability/test_slow_clients.py covers
    # that); here every one must be admitted so that SIGTERM meets requests in flight.
    service = start_service(service_env(models, ESCALATION_RISK_MAX_BATCH="1000", ESCALATION_RISK_SCORING_SLOTS="8",
                                        ESCALATION_RISK_MAX_BODY_BYTES=str(32 * 2**20)), tmp_path / "gunicorn.log")
    batch = {"tickets": (wire_tickets * (1000 // len(wire_tickets) + 1))[:1000]}
    load = LoadRun(service.port, [batch], AUTH, concurrency=8, total=8)
    term_at: list[float] = []

    def terminate_when_busy() -> None:
        # All 8 requests go out at once and 2 workers share them: when the first answer is back,
        # the others are still being served.
        deadline = time.monotonic() + 60
        while not load.outcomes and time.monotonic() < deadline:
            time.sleep(0.005)
        term_at.append(time.monotonic())
        service.process.send_signal(signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_busy)
    load.start()
    killer.start()
    load.join(120)
    killer.join()
    exit_code = service.process.wait(60)
    statuses = [o.status for o in load.outcomes]
    assert statuses == [200] * 8, [o.error for o in load.outcomes]
    finished_after_term = [o for o in load.outcomes if o.received > term_at[0]]
    assert finished_after_term, "no request was still in flight at SIGTERM; the test proved nothing"
    assert exit_code == 0
    assert "Handling signal: term" in service.log()
    with pytest.raises(OSError):  # after shutdown nothing listens any more
        socket.create_connection(("127.0.0.1", service.port), timeout=2).close()


@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_tracking_server_lost_during_training_registers_nothing(tmp_path):
    """A real `mlflow server` answers when training starts and is gone when it ends: clear error, exit 2,
    no bundle, no run or model version on the server's store."""
    from features.synthetic import generate_event_log
    from tests.training.test_registry import wait_for

    events_path = tmp_path / "events.parquet"
    generate_event_log(events_path, n_tickets=1500, seed=5)  # small: the training only has to take a while
    port = free_port()
    store = tmp_path / "server.db"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store}", "--artifacts-destination", str(tmp_path / "server-artifacts"),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        env = {**os.environ, "ESCALATION_RISK_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        training = subprocess.Popen([sys.executable, "-m", "cli", "train", "--data", str(events_path)],
                                    cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not (tmp_path / "reports" / "rejects.csv").exists():  # written once training has started
            assert training.poll() is None, training.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # at once: the training must still be running afterwards
        server.wait(60)
        out, err = training.communicate(timeout=800)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert training.returncode == 2, err[-2000:]
    assert "is unreachable" in err and "after training, before writing or registering anything" in err
    assert "Traceback" not in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}", registry_uri=f"sqlite:///{store}")
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
