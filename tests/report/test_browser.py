"""The report served by a running service, rendered in headless Chromium (Debian's package).

The screenshot is kept at reports/ci-artifacts/report.png (git-ignored) for CI to pick up.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from werkzeug.serving import make_server

from serving.app import close_app
from tests.report.conftest import VERSION, make_report_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "ci-artifacts"
# Without the background-networking flags Chromium tries to reach Google at start-up (no network here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture()
def served_report(report_models_dir, tmp_path):
    """The real service on loopback (werkzeug's threaded server), on an ephemeral port."""
    from serving import create_app

    app = create_app(make_report_settings(report_models_dir, reports_dir=tmp_path / "reports"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="report-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        close_app(app)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_latest_report_renders_in_chromium_without_errors(served_report, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    response = page.goto(f"{served_report}/reports/latest", wait_until="load")
    assert response is not None and response.status == 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    first_screen = ARTIFACTS / "report-first-screen.png"
    page.screenshot(path=str(first_screen))
    full = ARTIFACTS / "report.png"
    page.screenshot(path=str(full), full_page=True)

    assert problems == []
    assert requests == [f"{served_report}/reports/latest"], "the page must fetch nothing else"
    assert page.title().startswith("Escalation risk report") and VERSION in page.title()
    headline = page.inner_text("#headline")
    assert "escalation rate" in headline and "riskiest open tickets" in headline
    assert page.locator("svg").count() >= 10
    with Image.open(first_screen) as image:
        stats = ImageStat.Stat(image.convert("L"))
        assert stats.stddev[0] > 20, "first screen looks blank"
        assert len(image.convert("L").getcolors(1 << 16)) > 50
    with Image.open(full) as image:
        assert image.height > 3000, "the full report should run over several screens"
        assert ImageStat.Stat(image.convert("L")).stddev[0] > 20


def test_report_prints_to_pdf(served_report, browser):
    page = browser.new_page()
    page.goto(f"{served_report}/reports/latest", wait_until="load")
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf.startswith(b"%PDF")
    (ARTIFACTS / "report.pdf").write_bytes(pdf)
    pages = pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")
    assert 3 <= pages <= 40, pages
