"""The feature-importance report in the browser: /reports/latest (the loaded model) and /reports/<version>.

Reports live in the reports folder as reports/<version>/ (written by training or
`escalation-risk report`). When one is missing but the model's bundle is at hand (the
loaded bundle, or models/<version>), it is rendered from the bundle once and kept. A kept
report records the manifest sha256 of the bundle it came from: when that bundle has changed
since (rewritten under the same version), the report is rendered again, so it is never stale.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request

from bundle.model import manifest_digest
from bundle.report import REPORT_FILES, REPORT_HTML, REPORT_SOURCE, ReportError, is_safe_version, write_report
from serving.auth import key_matches, presented_key
from serving.errors import ApiError, json_response

reports = Blueprint("reports", __name__)
# The page is static: no scripts, nothing fetched from anywhere.
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
MIMETYPES = {".html": "text/html", ".json": "application/json", ".csv": "text/csv"}


def init_app(app: Flask) -> None:
    app.extensions["report_lock"] = threading.Lock()
    app.register_blueprint(reports)


@reports.before_request
def check_api_key() -> None:
    """Same rule as model info: a key is needed when keys are configured."""
    settings = current_app.extensions["settings"]
    if settings.api_keys and not key_matches(presented_key(request), settings.api_keys):
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer … or X-API-Key)")


def find_bundle(version: str) -> Path | None:
    """The loaded bundle if it is that version, else models/<version> if it exists."""
    bundle = current_app.extensions["model"].bundle
    if bundle is not None and bundle.version == version:
        return bundle.path
    candidate = current_app.extensions["settings"].resolved_models_dir / version
    return candidate if (candidate / "metadata.json").is_file() else None


def ensure_report(version: str) -> Path:
    """reports/<version>/, rendered from the bundle when it is not there yet."""
    if not is_safe_version(version):
        raise ApiError(400, "invalid_version", f"version {version[:80]!r} is not a model version "
                       "(letters, digits, '.', '_' and '-' only)", [{"field": "version", "message": "invalid"}])
    reports_dir = current_app.extensions["settings"].resolved_reports_dir.resolve()
    report_dir = reports_dir / version
    bundle_dir = find_bundle(version)
    if bundle_dir is None:
        if (report_dir / REPORT_HTML).is_file():
            return report_dir  # the bundle is gone: the report kept is all there is
        raise ApiError(404, "not_found", f"no report for model version {version}")
    digest = manifest_digest(bundle_dir)
    if digest is None and (report_dir / REPORT_HTML).is_file():
        return report_dir  # a champion downloaded from MLflow, deleted once loaded: nothing to render from
    if is_current(report_dir, digest):
        return report_dir
    with current_app.extensions["report_lock"]:
        if not is_current(report_dir, digest):
            try:
                write_report(bundle_dir, report_dir)
            except ReportError as exc:
                raise ApiError(404, "not_found", f"no report for model version {version}: {exc}") from exc
    return report_dir


def is_current(report_dir: Path, digest: str | None) -> bool:
    """The report exists and was rendered from the bundle content with this manifest sha256."""
    try:
        recorded = (report_dir / REPORT_SOURCE).read_text().strip()
    except OSError:
        return False
    return (report_dir / REPORT_HTML).is_file() and digest is not None and recorded == digest


def send_report_file(report_dir: Path, name: str) -> Response:
    path = report_dir / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"no {name} in the report for model version {report_dir.name}")
    mimetype = MIMETYPES[path.suffix]
    headers = HTML_HEADERS if mimetype == "text/html" else {"Cache-Control": "no-cache"}
    return Response(path.read_bytes(), mimetype=mimetype, headers=headers)


def loaded_version() -> str:
    bundle = current_app.extensions["model"].bundle
    if bundle is None:
        raise ApiError(503, "model_not_loaded", "no model is loaded, so there is no latest report; run `make train`")
    return bundle.version


@reports.get("/reports/latest")
def get_latest_report() -> Response:
    return send_report_file(ensure_report(loaded_version()), REPORT_HTML)


@reports.get("/reports/latest/<name>")
def get_latest_report_file(name: str) -> Response:
    return get_report_file(loaded_version(), name)


@reports.get("/reports/<version>")
def get_report(version: str) -> Response:
    return send_report_file(ensure_report(version), REPORT_HTML)


@reports.get("/reports/<version>/<name>")
def get_report_file(version: str, name: str) -> Response:
    """The report's JSON and CSV copies; only the files a report folder is known to hold."""
    if name not in REPORT_FILES:
        raise ApiError(404, "not_found", f"a report has no file {name[:80]!r}; files: {', '.join(REPORT_FILES)}")
    return send_report_file(ensure_report(version), name)


@reports.get("/reports")
def list_reports() -> Response:
    """Versions with a rendered report, newest first, and the loaded model's version."""
    reports_dir = current_app.extensions["settings"].resolved_reports_dir
    versions = sorted((p.name for p in reports_dir.glob("*") if (p / REPORT_HTML).is_file() and is_safe_version(p.name)),
                      reverse=True) if reports_dir.is_dir() else []
    bundle = current_app.extensions["model"].bundle
    return json_response({"latest": bundle.version if bundle else None, "versions": versions})
