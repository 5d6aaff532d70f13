"""Reliability fixtures: the serving fixtures, two bundles to swap between, and a real gunicorn."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability.harness import Service, start_service
from tests.serving.conftest import (  # noqa: F401 - fixtures re-used here
    ADMIN_KEY,
    API_KEY,
    app,
    client,
    serving_models_dir,
    settings,
    wire_tickets,
)
from training.packaging import point_current, write_bundle

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
V1, V2 = "v1-small", "v2-small"


def make_models_dir(target: Path, source_dir: Path, small_result) -> Path:
    """models/ with bundles v1-small and v2-small (the same model, told apart by version) and current -> v1."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_dir / V1, target / V1)
    write_bundle(small_result, target, V2)
    point_current(target, target / V1)
    return target


@pytest.fixture()
def models_dir(serving_models_dir, small_result, tmp_path) -> Path:  # noqa: F811
    return make_models_dir(tmp_path / "models", serving_models_dir, small_result)


def service_env(models_dir: Path, **extra: str) -> dict[str, str]:
    return {"ESCALATION_RISK_MODELS_DIR": str(models_dir), "ESCALATION_RISK_API_KEYS": API_KEY,
            "ESCALATION_RISK_ADMIN_KEY": ADMIN_KEY, "ESCALATION_RISK_MAX_BODY_BYTES": "262144",
            "ESCALATION_RISK_MAX_BATCH": "50",
            # Its own ticket store, never the checkout's data/tickets.db (a stored score of an older model would answer).
            "ESCALATION_RISK_STORE_URL": f"sqlite:///{Path(models_dir).parent / 'tickets.db'}", **extra}


@pytest.fixture(scope="module")
def shared_service(serving_models_dir, small_result, tmp_path_factory):  # noqa: F811
    """One gunicorn (2 workers) per test module, on its own models/ copy."""
    models = make_models_dir(tmp_path_factory.mktemp("svc") / "models", serving_models_dir, small_result)
    service: Service = start_service(service_env(models), models.parent / "gunicorn.log")
    service.models_dir = models
    yield service
    service.stop()
