"""The ops lead's live view on a real store: a slice of the small model's test period replayed through
the store and the watcher (serving.replay), then the live view, feedback, the dashboard and its
acknowledge form, and the page in headless Chromium."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageStat
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from bundle.case_mix import CASE_MIX_DATA
from features.schema import validate_events
from features.snapshots import build_snapshots
from serving.alerts import AlertStore
from serving.app import close_app
from serving.destinations import Destinations
from serving.live_model import ModelHolder
from serving.monitoring import OpsMonitor, features_as_of, label_updates
from serving.policy import load_policy
from serving.replay import load_replay_events, replay_history, select_period
from serving.scoring import score_states
from serving.store.db import create_store_engine
from serving.store.event_log import EVENT_ID, find_ticket_ids, replay_states, to_event_frame
from serving.store.monitoring_tables import FeedbackRow
from serving.store.tickets import TicketStore
from serving.watcher import Watcher
from tests.serving.conftest import API_KEY, AUTH, make_settings
from training.packaging import point_current, write_bundle

SLICE_DAYS = 40
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "ci-artifacts"


@pytest.fixture(scope="module")
def ops_models_dir(small_result, tmp_path_factory) -> Path:
    """The small model, its monitoring thresholds lowered to this small store's volumes."""
    result = copy.copy(small_result)
    monitoring = small_result.params.monitoring.model_copy(update={"min_drift_rows": 100, "min_outcomes": 100,
                                                                    "window_days": 14.0, "windows": 3})
    result.params = small_result.params.model_copy(update={"monitoring": monitoring})
    models_dir = tmp_path_factory.mktemp("ops_models")
    point_current(models_dir, write_bundle(result, models_dir, "v1-ops"))
    return models_dir


@pytest.fixture(scope="module")
def replayed(ops_models_dir, small_events_path, small_result, tmp_path_factory):
    """The first SLICE_DAYS of the test period replayed (12-hour ticks), then fresh open tickets that a
    watcher tick alerts on. Returns (store URL, period end, the slice's events, the open alerts' ids)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ops_store') / 'tickets.db'}"
    settings = make_settings(ops_models_dir, store_url=url, watch_lease_seconds=2 * 86400, watch_batch_size=5000)
    policy = load_policy(settings.resolved_policy_path)
    test_start = small_result.snapshots.loc[small_result.snapshots["split"] == "test", "created_at"].min()
    events = select_period(load_replay_events(small_events_path), test_start, test_start + pd.Timedelta(days=SLICE_DAYS))
    run = replay_history(events, ModelHolder(settings), policy, settings, timedelta(hours=12), store_url=url)
    end = run.period[1] + timedelta(hours=1)

    # New tickets arriving at the end, open, several above the alert line: the watcher alerts on them.
    engine = create_store_engine(url)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    assert holder.reload().ok
    firsts = events.groupby("ticket_id", sort=False).head(3).tail(150)
    fresh = []
    for k, row in enumerate(firsts.itertuples()):
        state = {c: getattr(row, c) for c in ("channel", "category", "subcategory", "priority", "customer_id",
                                              "customer_tier", "agent_id", "group", "subject", "description",
                                              "last_customer_message", "customer_messages", "agent_messages",
                                              "reassignment_count")}
        state = {k2: (None if pd.isna(v) else (int(v) if isinstance(v, np.integer) else v)) for k2, v in state.items()}
        fresh.append({**state, "ticket_id": f"LIVE-{k}", "created_at": (end - timedelta(hours=30)).isoformat(),
                      "event_time": (end - timedelta(hours=1)).isoformat(), "status": "open", "escalation_level": 0})
    scores = score_states(holder.live, policy, fresh, settings, end)
    assert sum(s["escalation"]["escalate_now"] or s["escalation"]["band"] == "high" for s in scores) >= 2
    watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations(), holder_id="replay")  # the replay's lease holder
    watcher.tickets.record_events(fresh, "test", received_at=end)
    assert watcher.tick(end).ran
    open_alerts = AlertStore(engine).list_alerts(end, status="open", limit=500)["alerts"]
    assert len(open_alerts) >= 2
    holder.stop_polling()
    engine.dispose()
    return url, end, events, [a["alert_id"] for a in open_alerts]


@pytest.fixture(scope="module")
def monitor(replayed, ops_models_dir):
    url, *_ = replayed
    settings = make_settings(ops_models_dir, store_url=url)
    engine = create_store_engine(url)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    assert holder.reload().ok
    yield OpsMonitor(engine, holder, settings)
    engine.dispose()


@pytest.fixture(scope="module")
def view(monitor, replayed):
    """The live view over every ticket of the replay, as of its end."""
    _, end, events, _ = replayed
    return monitor.compute(now=end, days=(end - events["created_at"].min()).total_seconds() / 86400 + 1)


def test_the_store_as_an_event_log_labels_and_features_like_training(monitor, replayed, small_events_path):
    """Labels from the store's log equal build_snapshots on the original log; the live features equal
    the offline FeatureBuilder's (as of each update); the case-mix risk equals training's."""
    _, end, events, _ = replayed
    engine, live = monitor.engine, monitor.holder.live
    ids = [t for t in find_ticket_ids(engine, None, None, end) if not t.startswith("LIVE-")]
    states = replay_states(engine, ids, ["closed"], known_by=end)
    from_store = validate_events(to_event_frame(states)).events
    labelled = label_updates(from_store, live.bundle.metadata, end)
    original = build_snapshots(validate_events(pd.read_parquet(small_events_path)).events,
                               closed_statuses=["closed"], horizon_hours=336, data_end=pd.Timestamp(end))
    original = original[original["ticket_id"].isin(ids)]
    merged = labelled.merge(original[["ticket_id", "event_time", "escalates"]], on=["ticket_id", "event_time"],
                            how="outer", suffixes=("_store", "_log"), indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) > 500
    assert (merged["escalates_store"] == merged["escalates_log"]).all()

    by_event = {s[EVENT_ID]: s for s in states}
    sample = labelled.iloc[:: max(1, len(labelled) // 150)]
    live_x = features_as_of(live, [by_event[i] for i in sample[EVENT_ID]])
    offline = live.bundle.builder.transform(original.set_index(["ticket_id", "event_time"]).loc[
        list(zip(sample["ticket_id"], sample["event_time"], strict=True))].reset_index())
    for j, name in enumerate(live.online.names):
        column = offline[name]
        expected = column.cat.codes.to_numpy().astype(float) if hasattr(column, "cat") else column.to_numpy(float)
        if hasattr(column, "cat"):
            expected[expected < 0] = np.nan
        np.testing.assert_allclose(live_x[:, j], expected, rtol=1e-5, atol=1e-5, err_msg=name)

    trained = pd.read_parquet(live.bundle.path / CASE_MIX_DATA).set_index("ticket_id")
    creations = labelled[labelled["position"] == 0]
    creations = creations[creations["ticket_id"].isin(trained.index)]
    assert len(creations) > 100
    extras = monitor.extras(live.bundle)
    expected = extras.case_mix.predict(features_as_of(live, [by_event[i] for i in creations[EVENT_ID]]))
    np.testing.assert_allclose(expected, trained.loc[creations["ticket_id"], "expected"].to_numpy(), rtol=1e-4)


def test_live_view_against_case_mix_health_and_drift(view, replayed, monitor):
    _, end, events, alert_ids = replayed
    assert view["tickets"] == events["ticket_id"].nunique() + 150
    case_mix = view["case_mix"]
    assert case_mix["available"] and case_mix["tickets"] > 200
    assert case_mix["expected"] == pytest.approx(case_mix["observed"], rel=1e-6)  # the window is the reference
    agents = case_mix["tables"]["agent_id"]
    assert agents["compared"] > 10 and {"ratio", "ci_low", "ci_high", "flag"} <= set(agents["rows"][0])
    assert {"agent_id", "group", "category", "customer_id"} == set(case_mix["tables"])

    health = view["health"]
    assert health["outcomes"] > 500
    assert sum(b["outcomes"] for b in health["bands"]) == health["outcomes"]
    rates = {b["band"]: b["realised_rate"] for b in health["bands"]}
    assert rates["high"] > rates["low"], "the high band must escalate more often than the low one"
    judged = [w for w in health["windows"] if w["judged"]]
    assert judged and all(0.55 < w["roc_auc"] <= 1 and 0 <= w["ece"] < 0.3 for w in judged)
    drift = health["drift"]
    assert drift["judged"] and drift["score"]["psi"] is not None
    assert len(drift["features"]) == len(monitor.holder.live.online.names)
    assert drift["features"][0]["psi"] >= drift["features"][-1]["psi"]
    assert health["alerts"]["raised"] >= len(alert_ids)
    assert isinstance(health["retrain"]["recommended"], bool)
    assert view["repeat_issues"]["tickets"] == view["tickets"]


@pytest.fixture()
def latest_is_the_replay_view(monitor, view):
    """The replay's live view as the store's latest (a test may have stored one as of today since)."""
    monitor.save(view, pd.Timestamp(view["window"]["from"]).to_pydatetime(),
                 pd.Timestamp(view["window"]["to"]).to_pydatetime(), view["model_version"])


@pytest.fixture()
def ops_app(replayed, ops_models_dir, latest_is_the_replay_view):
    from serving import create_app

    url, *_ = replayed
    app = create_app(make_settings(ops_models_dir, store_url=url, monitoring_interval_seconds=0))
    app.config.update(TESTING=True)
    yield app
    close_app(app)


def test_feedback_is_stored_and_bad_feedback_named(ops_app, replayed):
    client = ops_app.test_client()
    ticket = "LIVE-0"
    ok = client.post("/v1/feedback", json={"ticket_id": ticket, "verdict": "disagree", "outcome": "escalated",
                                           "escalation_type": "hierarchical", "who": "lead-1"}, headers=AUTH)
    assert ok.status_code == 201, ok.get_json()
    body = ok.get_json()
    assert body["verdict"] == "disagree" and body["model_version"] == "v1-ops" and body["probability"] is not None
    assert body["received_at"].endswith("+00:00"), body["received_at"]
    early = client.post("/v1/feedback", json={"ticket_id": ticket, "verdict": "agree", "outcome": "escalated",
                                              "escalated_at": "2000-01-01T00:00:00"}, headers=AUTH)
    assert early.status_code == 422 and [d["field"] for d in early.get_json()["details"]] == ["escalated_at"]
    assert "before the ticket's created_at" in early.get_json()["details"][0]["message"]
    with Session(create_store_engine(replayed[0])) as session:
        row = session.execute(select(FeedbackRow).where(FeedbackRow.id == body["feedback_id"])).scalar_one()
        assert (row.ticket_id, row.outcome, row.escalation_type, row.who) == (ticket, "escalated", "hierarchical",
                                                                              "lead-1")
    assert client.post("/v1/feedback", json={"ticket_id": ticket, "verdict": "agree"}).status_code == 401
    unknown = client.post("/v1/feedback", json={"ticket_id": "NOPE", "verdict": "agree"}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.get_json()["details"][0]["field"] == "ticket_id"
    bad = client.post("/v1/feedback", json={"ticket_id": ticket, "verdict": "maybe", "escalated_at": "soon"},
                      headers=AUTH)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.get_json()["details"]} == {"verdict", "escalated_at"}
    inconsistent = client.post("/v1/feedback", json={"ticket_id": ticket, "verdict": "agree",
                                                     "escalation_type": "functional"}, headers=AUTH)
    assert inconsistent.status_code == 422 and "outcome" in inconsistent.get_json()["details"][0]["message"]
    verdicts = {v["verdict"]: v for v in client.get("/v1/health?refresh=1", headers=AUTH).get_json()["health"]["verdicts"]}
    assert verdicts["feedback: disagree"]["given"] >= 1


def test_dashboard_needs_the_key_and_shows_the_live_view(ops_app):
    client = ops_app.test_client()
    denied = client.get("/dashboard")
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic")
    basic = base64.b64encode(f"lead:{API_KEY}".encode()).decode()
    page = client.get("/dashboard", headers={"Authorization": f"Basic {basic}"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "<script" not in html.lower()
    assert not re.search(r'(?:src|href|action)\s*=\s*"(?:https?:)?//', html), "nothing may load from elsewhere"
    for section in ("queue", "alerts", "case-mix", "model-health", "health-tiles"):
        assert f'id="{section}"' in html, section
    assert html.count("<svg") >= 3 and 'action="/dashboard/alerts/' in html
    assert client.get("/dashboard", headers={"Authorization": "Basic " + base64.b64encode(b"lead:wrong").decode()}
                      ).status_code == 401
    metrics = client.get("/metrics").get_data(as_text=True)
    for gauge in ("escalation_risk_score_psi", "escalation_risk_feature_psi{", "escalation_risk_calibration_ece",
                  "escalation_risk_roc_auc", "escalation_risk_band_realised_rate{", "escalation_risk_retrain_recommended"):
        assert gauge in metrics, gauge
    ece = re.search(r"^escalation_risk_calibration_ece (\S+)$", metrics, re.MULTILINE)
    assert ece and 0 <= float(ece.group(1)) < 0.3


def test_acknowledge_form_changes_the_alert_and_refuses_bad_posts(ops_app, replayed):
    url, end, _, alert_ids = replayed
    client = ops_app.test_client()
    alert_id = alert_ids[0]
    html = client.get("/dashboard", headers=AUTH).get_data(as_text=True)
    token = re.search(rf'action="/dashboard/alerts/{alert_id}/ack">\s*<input type="hidden" name="token" '
                      r'value="([0-9a-f]*)"', html).group(1)
    form = {"who": "lead-1", "verdict": "acting", "note": "calling the customer", "token": token}
    cross = client.post(f"/dashboard/alerts/{alert_id}/ack", data=form,
                        headers={**AUTH, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    forged = client.post(f"/dashboard/alerts/{alert_id}/ack", data={**form, "token": "0" * 64}, headers=AUTH)
    assert forged.status_code == 403 and forged.get_json()["details"][0]["field"] == "token"
    bad = client.post(f"/dashboard/alerts/{alert_id}/ack", data={**form, "verdict": "later", "who": ""}, headers=AUTH)
    assert bad.status_code == 422 and {d["field"] for d in bad.get_json()["details"]} == {"who", "verdict"}
    engine = create_store_engine(url)
    assert AlertStore(engine).get_alert(alert_id)["status"] == "open", "refused posts change nothing"
    done = client.post(f"/dashboard/alerts/{alert_id}/ack", data=form,
                       headers={**AUTH, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 303 and done.headers["Location"].startswith(f"/dashboard?acknowledged={alert_id}")
    alert = AlertStore(engine).get_alert(alert_id)
    assert alert["status"] == "acknowledged" and alert["acknowledgement"]["by"] == "lead-1"
    assert alert["timeline"][-1]["kind"] == "acknowledged"
    again = client.post(f"/dashboard/alerts/{alert_id}/ack", data=form, headers=AUTH)
    assert again.status_code == 409
    token = hmac.new(API_KEY.encode(), b"ack:999999", hashlib.sha256).hexdigest()  # the documented form token
    missing = client.post("/dashboard/alerts/999999/ack", data={**form, "token": token}, headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["details"][0]["field"] == "alert_id"


@pytest.fixture()
def served_dashboard(replayed, ops_models_dir, latest_is_the_replay_view):
    from serving import create_app

    url, *_ = replayed
    app = create_app(make_settings(ops_models_dir, store_url=url, monitoring_interval_seconds=0))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        close_app(app)


def test_dashboard_in_chromium_acknowledges_through_the_page(served_dashboard, replayed):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright

    url, _, _, alert_ids = replayed
    engine = create_store_engine(url)
    alert_id = next(a for a in alert_ids if AlertStore(engine).get_alert(a)["status"] == "open")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          http_credentials={"username": "lead", "password": API_KEY})
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))

            response = page.goto(f"{served_dashboard}/dashboard", wait_until="load")
            assert response is not None and response.status == 200
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            with Image.open(shot) as image:
                grey = image.convert("L")
                assert ImageStat.Stat(grey).stddev[0] > 20, "the dashboard looks blank"
                assert len(grey.getcolors(1 << 16)) > 50 and image.height > 1500
            assert page.locator("svg").count() >= 3
            assert page.locator(f"#alert-{alert_id} form").count() == 1

            row = page.locator(f"#alert-{alert_id}")
            row.locator("input[name=who]").fill("lead-browser")
            row.locator("select[name=verdict]").select_option("agree")
            row.locator("input[name=note]").fill("seen in the browser")
            with page.expect_navigation():
                row.locator("button[type=submit]").click()
            assert page.url.startswith(f"{served_dashboard}/dashboard?acknowledged={alert_id}")
            assert f"Alert {alert_id} acknowledged." in page.inner_text("#notice")
            assert page.locator(f"#alert-{alert_id}").count() == 0, "an acknowledged alert leaves the open list"

            assert problems == []
            assert requests and all(r.startswith(served_dashboard + "/") for r in requests), requests
        finally:
            browser.close()
    alert = AlertStore(engine).get_alert(alert_id)
    assert alert["status"] == "acknowledged" and alert["acknowledgement"]["by"] == "lead-browser"
    assert alert["acknowledgement"]["verdict"] == "agree" and alert["acknowledgement"]["note"] == "seen in the browser"


def test_store_export_is_as_known_at_the_cutoff_with_reported_outcomes(replayed, small_events_path, tmp_path):
    """`db export --before`: only what the store knew at the cut-off; a reported escalation received by then
    becomes a level rise, one received after it does not; `train --extra-data --cutoff` inputs combine."""
    from serving.outcomes import FEEDBACK_EVENT, export_training_events
    from training.combine import combine_event_logs

    url, end, events, _ = replayed
    engine = create_store_engine(url)
    # On a replay tick: the replay records each tick's events as received at that tick, and the export
    # reads what had been received by the cut-off.
    cutoff = (events["event_time"].min() + pd.Timedelta(days=SLICE_DAYS / 2)).floor("12h")
    known = events[events["event_time"] <= cutoff]
    quiet = known.groupby("ticket_id")["escalation_level"].max()
    reported, late = quiet[quiet == 0].index[:2]
    with Session(engine) as session, session.begin():
        for ticket_id, received in ((reported, cutoff - pd.Timedelta(hours=2)), (late, cutoff + pd.Timedelta(hours=2))):
            session.add(FeedbackRow(ticket_id=ticket_id, verdict="disagree", outcome="escalated",
                                    escalation_type="hierarchical", received_at=received.to_pydatetime()))
    export = export_training_events(engine, cutoff.to_pydatetime(), ["closed"])
    out = export.events
    assert out["event_time"].max() <= cutoff and set(out["ticket_id"]) == set(known["ticket_id"])
    assert export.feedback_folded == 1
    folded = out[out["event_type"] == FEEDBACK_EVENT]
    assert folded["ticket_id"].tolist() == [reported] and folded["escalation_level"].tolist() == [1]
    assert folded["event_time"].iloc[0] == cutoff - pd.Timedelta(hours=2)
    assert out.loc[out["ticket_id"] == late, "escalation_level"].max() == 0, "feedback after the cut-off is not known"
    plain = out[out["event_type"] != FEEDBACK_EVENT].drop(columns=["event_type"])
    expected = known.drop(columns=["event_type"]).sort_values(["ticket_id", "event_time"]).reset_index(drop=True)
    for column in ("ticket_id", "event_time", "status", "customer_messages", "escalation_level", "agent_id"):
        assert plain.sort_values(["ticket_id", "event_time"])[column].astype(str).tolist() == \
            expected[column].astype(str).tolist(), column

    path = tmp_path / "store_events.parquet"
    out.to_parquet(path, index=False)
    combined, summary = combine_event_logs([small_events_path, path], cutoff.to_pydatetime())
    assert combined["event_time"].max() <= cutoff
    base = pd.read_parquet(small_events_path)
    assert summary["tickets"] == base.loc[base["event_time"] <= cutoff, "ticket_id"].nunique()
    assert combined.loc[combined["ticket_id"] == reported, "event_type"].eq(FEEDBACK_EVENT).sum() == 1, \
        "a ticket in both logs keeps the store's rows"
