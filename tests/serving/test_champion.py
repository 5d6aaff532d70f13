"""The model store loads the registered champion from a real MLflow tracking store (SQLite)."""

from __future__ import annotations

from features.settings import Settings
from serving import create_app
from serving.app import close_app
from tests.serving.conftest import AUTH, make_settings
from training.packaging import write_bundle
from training.registry import log_and_register


def test_champion_is_loaded_from_the_tracking_store(small_result, serving_models_dir, params_path,
                                                    small_events_path, tmp_path, wire_tickets):
    """MLFLOW_TRACKING_URI set: /v1/model reports the champion's bundle and registry version,
    not the local models/current (which holds another version)."""
    registry_settings = Settings(project_dir=tmp_path, mlflow_tracking_uri=None)
    champion_dir = write_bundle(small_result, tmp_path / "registered", "v9-champion")
    registration = log_and_register(small_result, champion_dir, registry_settings, params_path, small_events_path)
    assert registration.champion

    settings = make_settings(serving_models_dir, mlflow_tracking_uri=registry_settings.resolved_tracking_uri)
    app = create_app(settings)
    try:
        client = app.test_client()
        body = client.get("/v1/model", headers=AUTH).get_json()
        assert body["version"] == "v9-champion"
        assert body["source"].startswith("models:/escalation-risk@champion")
        assert body["registry_version"] == registration.model_version
        assert client.get("/readyz").get_json()["version"] == "v9-champion"
        scored = client.post("/v1/score", json=wire_tickets[0], headers=AUTH).get_json()
        assert scored["model"]["version"] == "v9-champion"
    finally:
        close_app(app)


def test_without_a_tracking_uri_the_local_bundle_is_served(client):
    body = client.get("/v1/model", headers=AUTH).get_json()
    assert body["version"] == "v1-small" and body["registry_version"] is None
