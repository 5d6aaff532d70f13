"""Under gunicorn with several workers: a bounded load run, and 20 model swaps while load runs
(reload endpoint, SIGHUP, and a moved @champion alias in a real MLflow SQLite store).

Heavy: `make test-reliability` (marker `reliability`), not part of `make test`.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.reliability.conftest import ADMIN, AUTH, V1, V2, make_models_dir, service_env
from tests.reliability.harness import LoadRun, Outcome, Service, percentile_ms, start_service
from training.packaging import point_current

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]
LOAD_REQUESTS, LOAD_CONCURRENCY = 30_000, 16
MODEL_NAME = "escalation-risk"


def test_load_run_has_no_errors_and_bounded_memory(serving_models_dir, small_result, wire_tickets, tmp_path):
    models = make_models_dir(tmp_path / "models", serving_models_dir, small_result)
    service = start_service(service_env(models), tmp_path / "gunicorn.log", workers=2)
    rss: dict[str, int] = {}

    def sample(done: int) -> None:
        if done == 10_000:
            rss["first_10k"] = service.workers_rss()
        elif done == 20_000:
            rss["before_last_10k"] = service.workers_rss()

    try:
        load = LoadRun(service.port, wire_tickets, AUTH, concurrency=LOAD_CONCURRENCY, total=LOAD_REQUESTS,
                       on_progress=sample).run()
        rss["last_10k"] = service.workers_rss()
    finally:
        service.stop()
    print(f"\nload: {len(load.outcomes)} requests, {len(load.failures)} errors, p50 {percentile_ms(load.outcomes, 50):.1f} ms, "
          f"p99 {percentile_ms(load.outcomes, 99):.1f} ms, workers RSS {rss}")
    assert len(load.outcomes) == LOAD_REQUESTS
    assert load.failures == [], load.failures[:5]
    assert rss["last_10k"] <= 1.10 * rss["first_10k"], rss


def hold_then_check(service: Service, version: str, deadline_s: float = 120) -> float:
    """Wait until every worker reports `version`; return that moment (monotonic)."""
    deadline = time.monotonic() + deadline_s
    while True:
        versions = service.fleet_versions(AUTH)
        if versions and all(v == version for v in versions) and len(versions) == service.workers:
            return time.monotonic()
        assert time.monotonic() < deadline, f"workers did not all switch to {version}: {versions}"
        time.sleep(0.05)


def check_swaps(outcomes: list[Outcome], swaps: list[tuple[float, float, str]]) -> int:
    """No failure; every answer labelled v1 or v2; between a completed swap and the next one, only the new version."""
    assert [o for o in outcomes if o.status != 200] == []
    assert {o.version for o in outcomes} <= {V1, V2}
    checked = 0
    for i, (_, done, version) in enumerate(swaps):
        next_start = swaps[i + 1][0] if i + 1 < len(swaps) else float("inf")
        after = [o for o in outcomes if done < o.sent and o.received < next_start]
        assert after, f"swap {i} to {version}: no request completed between the reload and the next swap"
        wrong = [o for o in after if o.version != version]
        assert wrong == [], f"swap {i}: {len(wrong)} answers from the old model after the reload completed"
        checked += len(after)
    return checked


def run_swaps_under_load(service: Service, tickets: list[dict], swap, n_swaps: int, first: str) -> tuple[LoadRun, list]:
    load = LoadRun(service.port, tickets, AUTH, concurrency=8, total=10**9)
    load.start()
    swaps: list[tuple[float, float, str]] = []
    version = first
    try:
        time.sleep(1.0)
        for k in range(n_swaps):
            version = V2 if version == V1 else V1
            started = time.monotonic()
            done = swap(k, version)
            swaps.append((started, done, version))
            time.sleep(0.6)  # let answers from the new version come in before the next swap
    finally:
        load.stop_event.set()
        load.join(60)
    return load, swaps


def test_rollouts_under_load_by_reload_endpoint_and_sighup(serving_models_dir, small_result, wire_tickets, tmp_path):
    models = make_models_dir(tmp_path / "models", serving_models_dir, small_result)
    service = start_service(service_env(models), tmp_path / "gunicorn.log", workers=3)

    def swap(k: int, version: str) -> float:
        point_current(models, models / version)
        if k % 2 == 0:
            status, body, _ = service.call("POST", "/v1/admin/reload", headers=ADMIN)
            assert status == 200 and body["version"] == version, body
            assert [w["version"] for w in body["workers"]] == [version] * 3, body
            return time.monotonic()
        service.process.send_signal(signal.SIGHUP)
        return hold_then_check(service, version)

    try:
        load, swaps = run_swaps_under_load(service, wire_tickets, swap, 14, V1)
    finally:
        service.stop()
    checked = check_swaps(load.outcomes, swaps)
    print(f"\nrollouts (endpoint + SIGHUP): {len(swaps)} swaps, {len(load.outcomes)} requests, "
          f"{len(load.failures)} failed, {checked} checked after completed swaps")
    assert len(swaps) == 14


def register_bundles(tracking_uri: str, models: Path) -> dict[str, str]:
    """Two registered versions in a SQLite store, each holding one bundle folder as its artifacts."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = mlflow.create_experiment("rollout", artifact_location=(models.parent / "artifacts").as_uri())
    client.create_registered_model(MODEL_NAME)
    versions = {}
    for bundle in (V1, V2):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(models / bundle), artifact_path=f"model/artifacts/{bundle}")
        created = client.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/model", run.info.run_id)
        versions[bundle] = str(created.version)
    client.set_registered_model_alias(MODEL_NAME, "champion", versions[V1])
    return versions


def test_rollouts_under_load_by_moving_the_champion_alias(serving_models_dir, small_result, wire_tickets, tmp_path):
    models = make_models_dir(tmp_path / "models", serving_models_dir, small_result)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = register_bundles(uri, models)
    point_current(models, models / V2)  # the local fallback differs: answers from it would show up as wrong
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    service = start_service(service_env(models, MLFLOW_TRACKING_URI=uri, ESCALATION_RISK_RELOAD_POLL_SECONDS="0.5"),
                            tmp_path / "gunicorn.log", workers=2)
    assert set(service.fleet_versions(AUTH)) == {V1}

    def swap(k: int, version: str) -> float:
        client.set_registered_model_alias(MODEL_NAME, "champion", versions[version])
        return hold_then_check(service, version)

    try:
        load, swaps = run_swaps_under_load(service, wire_tickets, swap, 6, V1)
        log = service.log()
    finally:
        service.stop()
    checked = check_swaps(load.outcomes, swaps)
    assert "falling back" not in log
    print(f"\nrollouts (@champion alias): {len(swaps)} swaps, {len(load.outcomes)} requests, "
          f"{len(load.failures)} failed, {checked} checked after completed swaps")


def test_failed_rollout_under_load_keeps_every_worker_on_the_old_model(serving_models_dir, small_result,
                                                                       wire_tickets, tmp_path):
    from tests.reliability.test_faults import broken_bundle

    models = make_models_dir(tmp_path / "models", serving_models_dir, small_result)
    service = start_service(service_env(models), tmp_path / "gunicorn.log", workers=2)
    load = LoadRun(service.port, wire_tickets, AUTH, concurrency=8, total=10**9)
    load.start()
    try:
        time.sleep(1)
        point_current(models, broken_bundle(models, "sha256 mismatch"))
        status, body, _ = service.call("POST", "/v1/admin/reload", headers=ADMIN)
        assert status == 409 and "sha256 mismatch" in body["error"]
        service.process.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert service.fleet_versions(AUTH) == [V1, V1]
    finally:
        load.stop_event.set()
        load.join(60)
        service.stop()
    assert load.failures == [] and {o.version for o in load.outcomes} == {V1}
