"""GET /dashboard: the ops lead's live page, rendered on the server; POST .../ack: the acknowledge form.

One self-contained HTML page: the open queue by risk (reasons, action, due time), open alerts with
an acknowledge form (a plain HTML form: no JavaScript), the against-case-mix tables, model-health
tiles and drift, charts drawn by matplotlib as inline SVG (as the report draws them). No scripts,
nothing fetched from anywhere (its Content-Security-Policy forbids it).

Access: when API keys are configured, the page and the form need one, as `Authorization: Bearer`,
`X-API-Key`, or HTTP Basic auth with the key as the password (what a browser can send without
JavaScript; the browser asks for it). The form's POST is refused from another origin (Origin /
Sec-Fetch-Site), and with keys it carries a token derived from the key (HMAC), so another site
cannot acknowledge alerts with the browser's remembered credentials.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import numpy as np
from flask import Blueprint, Flask, Response, current_app, redirect, request
from markupsafe import Markup
from sqlalchemy.exc import DBAPIError

from bundle.model import label_feature
from bundle.report import ACCENT, INK, LIGHT, MUTED, chart_case_mix, figure_to_svg
from serving.alerts import VERDICTS, AlertConflict, AlertNotFound, AlertStore
from serving.auth import key_matches
from serving.errors import ApiError
from serving.monitoring import MonitoringError
from serving.schemas import ACK_NOTE_MAX

dashboard = Blueprint("dashboard", __name__)
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}
QUEUE_ROWS = 20
ALERT_ROWS = 30
DRIFT_ROWS = 12


def init_app(app: Flask) -> None:
    app.register_blueprint(dashboard)


def dashboard_key() -> str | None:
    """The key this request presents: Bearer, X-API-Key, or the password of HTTP Basic auth."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    if request.headers.get("X-API-Key"):
        return request.headers["X-API-Key"]
    auth = request.authorization
    return auth.password if auth is not None and auth.type == "basic" and auth.password else None


@dashboard.before_request
def check_access() -> None:
    settings = current_app.extensions["settings"]
    if settings.api_keys and not key_matches(dashboard_key(), settings.api_keys):
        raise ApiError(401, "unauthorized", "the dashboard needs an API key (HTTP Basic: any user name, the key "
                       "as password; or Authorization: Bearer … / X-API-Key)",
                       headers={"WWW-Authenticate": 'Basic realm="escalation-risk dashboard", charset="UTF-8"'})


def form_token(alert_id: int) -> str:
    """The acknowledge form's token: HMAC of the alert id under the presented key ('' without keys)."""
    key = dashboard_key() if current_app.extensions["settings"].api_keys else None
    if not key:
        return ""
    return hmac.new(key.encode(), f"ack:{alert_id}".encode(), hashlib.sha256).hexdigest()


def check_same_origin() -> None:
    """A form post must come from this page: Sec-Fetch-Site / Origin, when the browser sends them."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, "cross_site", "acknowledgements are accepted from the dashboard's own page only")
    origin = request.headers.get("Origin")
    if origin not in (None, "null") and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "cross_site", "acknowledgements are accepted from the dashboard's own page only")


def require_parts():
    store = current_app.extensions.get("ticket_store")
    monitor = current_app.extensions.get("monitor")
    if store is None or monitor is None:
        raise ApiError(404, "state_off", "the dashboard needs the ticket store (ESCALATION_RISK_STATE=on)")
    return store, monitor


def build_queue(store, alerts: list[dict]) -> dict:
    """The queue's top rows with the reasons and action of the same latest score the risk column shows
    (TicketStore.list_queue(detail=True): a request's or the watcher's, whichever is newer)."""
    page = store.list_queue(limit=QUEUE_ROWS, detail=True)
    due_by_ticket = {a["ticket_id"]: a["due_at"] for a in alerts if a.get("due_at")}
    for ticket in page["tickets"]:
        response = ticket.pop("latest_score") or {}
        ticket["reasons"] = (response.get("escalation") or {}).get("reasons") or []
        ticket["reasons_computed"] = response.get("reasons_computed", True)
        ticket["scored_by"] = response.get("source")
        ticket["action"] = response.get("action") or {}
        due = due_by_ticket.get(ticket["ticket_id"])
        hours = ticket["action"].get("respond_within")
        if due is None and hours is not None and ticket.get("scored_at"):
            due = (datetime.fromisoformat(ticket["scored_at"]) + timedelta(hours=float(hours))).isoformat()
        ticket["due_at"] = due
    return page


# --- charts -----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.patch.set_alpha(0)
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(colors=INK, labelsize=8)
    ax.set_axisbelow(True)
    return fig, ax


def chart_drift(drift: dict, watch: float, drifted: float) -> str | None:
    rows = [r for r in drift.get("features", []) if r["psi"] is not None][:DRIFT_ROWS][::-1]
    score = (drift.get("score") or {}).get("psi")
    if score is not None:
        rows.append({"feature": "score", "psi": score})
    if not rows:
        return None
    fig, ax = _figure(5.4, 0.26 * len(rows) + 0.8)
    colors = [ACCENT if r["psi"] > drifted else (INK if r["psi"] > watch else MUTED) for r in rows]
    ax.barh([label_feature(r["feature"]) if r["feature"] != "score" else "the model's score" for r in rows],
            [r["psi"] for r in rows], color=colors)
    ax.axvline(watch, color=MUTED, linestyle=":", linewidth=0.8)
    ax.axvline(drifted, color=ACCENT, linestyle="--", linewidth=0.8)
    ax.set_xlabel("population stability index against training (dotted: watch, dashed: drifted)", fontsize=7)
    ax.grid(axis="x", color=LIGHT, linewidth=0.6)
    ax.tick_params(axis="y", labelsize=7)
    return figure_to_svg(fig, "drift", "Drift of the features and the score against the training distribution")


def chart_windows(windows: list[dict], test: dict) -> str | None:
    judged = [w for w in windows if w["judged"]][::-1]
    if not judged:
        return None
    fig, ax = _figure(4.8, 2.4)
    x = np.arange(len(judged))
    ax.plot(x, [w["roc_auc"] for w in judged], "o-", color=ACCENT, label="ROC-AUC")
    if test.get("roc_auc") is not None:
        ax.axhline(test["roc_auc"], color=ACCENT, linestyle="--", linewidth=0.8, label="ROC-AUC, test period")
    ax.set_ylim(0.4, 1.0)
    ax.set_xticks(x, [w["to"][:10] for w in judged], fontsize=7)
    ax.set_ylabel("ROC-AUC", fontsize=8)
    twin = ax.twinx()
    twin.bar(x, [w["ece"] for w in judged], width=0.35, color=MUTED, alpha=0.6, label="calibration error")
    twin.set_ylim(0, max(0.1, max(w["ece"] for w in judged) * 1.3))
    twin.set_ylabel("ECE", fontsize=8)
    twin.tick_params(labelsize=7)
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, frameon=False, loc="lower left")
    ax.grid(axis="y", color=LIGHT, linewidth=0.6)
    return figure_to_svg(fig, "health-windows", "ROC-AUC and calibration error by window of outcomes")


def render_page(view: dict, queue: dict, alerts: dict, notice: str | None) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    health = view.get("health") or {}
    thresholds = health.get("thresholds") or {}
    case_mix = view.get("case_mix") or {}
    charts = {
        "drift": chart_drift(health.get("drift") or {}, thresholds.get("psi_watch", 0.1),
                             thresholds.get("psi_retrain", 0.25)),
        "windows": chart_windows(health.get("windows") or [], health.get("test_period") or {}),
        "case_mix": {name: chart_case_mix(name, table, case_mix["confidence"])
                     for name, table in (case_mix.get("tables") or {}).items() if table["rows"] and name != "customer_id"},
    }
    safe = {"drift": Markup(charts["drift"]) if charts["drift"] else None,
            "windows": Markup(charts["windows"]) if charts["windows"] else None,
            "case_mix": {k: Markup(v) for k, v in charts["case_mix"].items()}}
    env = Environment(loader=PackageLoader("serving", "."), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v, d=0: "–" if v is None or v != v else f"{v:.{d}%}"
    env.filters["num"] = lambda v, d=0: "–" if v is None or v != v else f"{v:,.{d}f}"
    env.filters["when"] = lambda v: "–" if not v else str(v)[:16].replace("T", " ")
    return env.get_template("dashboard.html.j2").render(
        view=view, health=health, case_mix=case_mix, queue=queue, alerts=alerts, charts=safe,
        verdicts=VERDICTS, token=form_token, notice=notice, label_feature=label_feature)


@dashboard.get("/dashboard")
def get_dashboard() -> Response:
    store, monitor = require_parts()
    try:
        view = monitor.current()
    except MonitoringError as exc:
        raise ApiError(503, "model_unavailable", f"{exc}; the dashboard needs a loaded model") from exc
    except DBAPIError as exc:
        from serving.ticket_routes import store_error

        raise store_error(exc) from exc
    now = datetime.now(UTC)
    alert_store = AlertStore(store.engine)
    open_alerts = alert_store.list_alerts(now, status="open", limit=ALERT_ROWS)
    queue = build_queue(store, open_alerts["alerts"])
    notice = request.args.get("acknowledged")
    notice = f"Alert {int(notice)} acknowledged." if notice and notice.isdigit() else None
    html = render_page(view, queue, open_alerts, notice)
    return Response(html, mimetype="text/html", headers=HTML_HEADERS)


@dashboard.post("/dashboard/alerts/<int:alert_id>/ack")
def post_acknowledge(alert_id: int) -> Response:
    """The dashboard's acknowledge form (application/x-www-form-urlencoded): who, verdict, note, token."""
    store, _ = require_parts()
    check_same_origin()
    expected = form_token(alert_id)
    if expected and not hmac.compare_digest(request.form.get("token", ""), expected):
        raise ApiError(403, "bad_form_token", "the form's token does not match: reload the dashboard and try again",
                       [{"field": "token", "message": "missing or wrong"}])
    who = (request.form.get("who") or "").strip()
    verdict = (request.form.get("verdict") or "").strip()
    note = (request.form.get("note") or "").strip() or None
    details = []
    if not who or len(who) > 255:
        details.append({"field": "who", "message": "who acknowledges: 1 to 255 characters"})
    if verdict not in VERDICTS:
        details.append({"field": "verdict", "message": f"one of {', '.join(VERDICTS)}"})
    if note is not None and len(note) > ACK_NOTE_MAX:
        details.append({"field": "note", "message": f"at most {ACK_NOTE_MAX} characters"})
    if details:
        raise ApiError(422, "invalid_acknowledgement", "the acknowledgement has invalid fields", details)
    try:
        AlertStore(store.engine).acknowledge(alert_id, who, verdict, note, datetime.now(UTC))
    except AlertNotFound as exc:
        raise ApiError(404, "not_found", f"no alert {alert_id}", [{"field": "alert_id", "message": "unknown alert"}]
                       ) from exc
    except AlertConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    return redirect(f"/dashboard?acknowledged={alert_id}#alerts", code=303)
