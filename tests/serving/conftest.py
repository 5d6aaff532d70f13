"""Serving fixtures: a bundle from the session's small model, an app on it, and its test client."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.schema import CANONICAL_COLUMNS
from features.settings import Settings
from serving.app import close_app
from training.packaging import point_current, write_bundle
from training.registry import to_wire_format

API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def serving_models_dir(small_result, tmp_path_factory) -> Path:
    """models/ with one verified bundle and `current` pointing at it."""
    models_dir = tmp_path_factory.mktemp("serving_models")
    bundle_dir = write_bundle(small_result, models_dir, "v1-small")
    point_current(models_dir, bundle_dir)
    return models_dir


@pytest.fixture(scope="session")
def wire_tickets(small_result) -> list[dict]:
    """Test-period snapshots as a ticketing system would send them (JSON-ready dicts)."""
    snapshots = small_result.snapshots
    test = snapshots.loc[snapshots["split"] == "test", list(CANONICAL_COLUMNS)].head(300)
    return to_wire_format(test).to_dict(orient="records")


def make_settings(models_dir: Path, **overrides) -> Settings:
    """Test settings; each call gets its own empty ticket store unless `store_url` is given."""
    import tempfile

    store_dir = Path(tempfile.mkdtemp(prefix="escalation-risk-store-"))
    values = dict(project_dir=models_dir.parent, models_dir=models_dir, mlflow_tracking_uri=None,
                  api_keys=[API_KEY], admin_key=ADMIN_KEY, max_batch=50, max_body_bytes=256 * 1024,
                  store_url=f"sqlite:///{store_dir / 'tickets.db'}")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture()
def settings(serving_models_dir) -> Settings:
    return make_settings(serving_models_dir)


@pytest.fixture()
def app(settings):
    from serving import create_app

    app = create_app(settings)
    app.config.update(TESTING=True)
    yield app
    close_app(app)


@pytest.fixture()
def client(app):
    return app.test_client()
