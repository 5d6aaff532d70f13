"""/reports/latest and /reports/<version>: the loaded model's report, JSON errors, no path tricks."""

from __future__ import annotations

import json
import shutil

import pytest

from serving.app import close_app
from tests.report.conftest import VERSION, make_report_settings


@pytest.fixture()
def report_app(report_models_dir, tmp_path):
    """The service on the report bundle, with an empty reports folder: reports render on demand."""
    from serving import create_app

    app = create_app(make_report_settings(report_models_dir, reports_dir=tmp_path / "reports"))
    app.config.update(TESTING=True)
    yield app
    close_app(app)


@pytest.fixture()
def report_client(report_app):
    return report_app.test_client()


def test_latest_is_the_loaded_models_report(report_client, report_app, small_result):
    response = report_client.get("/reports/latest")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert VERSION in page and "What drives support escalations" in page
    rendered = report_app.extensions["settings"].resolved_reports_dir / VERSION / "report.html"
    assert rendered.is_file(), "the on-demand report is kept for the next request"
    data = report_client.get("/reports/latest/report.json").get_json()
    assert data["model"]["version"] == VERSION
    assert data["metrics"]["model"]["roc_auc"] == pytest.approx(small_result.metrics["test_roc_auc"])
    assert report_client.get("/reports").get_json() == {"latest": VERSION, "versions": [VERSION]}


def test_report_by_version_and_its_files(report_client):
    assert report_client.get(f"/reports/{VERSION}").status_code == 200
    csv = report_client.get(f"/reports/{VERSION}/capacity.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert csv.get_data(as_text=True).startswith("share_reviewed,")


def test_a_prerendered_report_is_served_as_written(report_client, report_app, report_written):
    target = report_app.extensions["settings"].resolved_reports_dir / "v0-older"
    shutil.copytree(report_written["dir"], target)
    assert report_client.get("/reports/v0-older").get_data() == (target / "report.html").read_bytes()


@pytest.mark.parametrize("version", ["v9-unknown", "20250101T000000Z-deadbeef"])
def test_unknown_version_is_a_json_404(report_client, version):
    response = report_client.get(f"/reports/{version}")
    assert response.status_code == 404
    assert response.is_json and response.get_json()["error"] == "not_found"
    assert version in response.get_json()["message"]


@pytest.mark.parametrize("path", ["/reports/..", "/reports/..%2F..%2Fetc%2Fpasswd", "/reports/a..b",
                                  "/reports/.hidden", "/reports/%2E%2E/report.json", "/reports/v1%00x",
                                  f"/reports/{VERSION}/..%2F..%2Fmetadata.json", f"/reports/{VERSION}/metadata.json",
                                  "/reports/..%5C..%5Cetc"])
def test_paths_outside_the_reports_folder_are_refused(report_client, path):
    response = report_client.get(path)
    assert response.status_code in (400, 404), path
    assert response.is_json
    assert "root:" not in response.get_data(as_text=True)


def test_reports_need_a_key_when_keys_are_configured(report_models_dir, tmp_path):
    from serving import create_app

    app = create_app(make_report_settings(report_models_dir, reports_dir=tmp_path / "r", api_keys=["k1"]))
    try:
        client = app.test_client()
        assert client.get("/reports/latest").status_code == 401
        assert client.get("/reports/latest", headers={"X-API-Key": "k1"}).status_code == 200
    finally:
        close_app(app)


def test_no_model_loaded_is_a_json_503(report_models_dir, tmp_path):
    from serving import create_app

    app = create_app(make_report_settings(report_models_dir, reports_dir=tmp_path / "r"), load_model=False)
    response = app.test_client().get("/reports/latest")
    assert response.status_code == 503 and response.get_json()["error"] == "model_not_loaded"


def test_a_bundle_rewritten_under_the_same_version_gets_a_fresh_report(report_models_dir, tmp_path):
    """The kept report records its bundle's manifest sha256; new content under the old name re-renders it."""
    from bundle.model import manifest_digest, write_manifest
    from bundle.report import REPORT_SOURCE
    from serving import create_app

    models_dir = tmp_path / "models"
    shutil.copytree(report_models_dir / VERSION, models_dir / VERSION)
    (models_dir / "current").symlink_to(VERSION)
    app = create_app(make_report_settings(models_dir, reports_dir=tmp_path / "reports"))
    client = app.test_client()
    try:
        first = client.get("/reports/latest/report.json").get_json()
        recorded = tmp_path / "reports" / VERSION / REPORT_SOURCE
        assert recorded.read_text() == manifest_digest(models_dir / VERSION)
        metadata_path = models_dir / VERSION / "metadata.json"
        metadata = json.loads(metadata_path.read_text())
        metadata["created_at"] = "2001-02-03T04:05:06+00:00"  # retrained into the same version name
        metadata_path.write_text(json.dumps(metadata))
        write_manifest(models_dir / VERSION)
        second = client.get("/reports/latest/report.json").get_json()
        assert recorded.read_text() == manifest_digest(models_dir / VERSION)
        assert first["model"]["created_at"] != metadata["created_at"]
        assert second["model"]["created_at"] == metadata["created_at"], "the report shows the old content"
    finally:
        close_app(app)
