"""The scoring service's app factory: settings, model, policy, errors, logging and metrics."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime

import orjson
from flask import Flask, Response, g, request

from features.settings import Settings
from serving.background import BackgroundThreads
from serving.errors import error_response, register_error_handlers
from serving.integration_mapping import load_integration_mapping
from serving.live_model import ModelHolder, WorkerFleet
from serving.metrics import OTHER, ServiceMetrics
from serving.policy import load_policy

log = logging.getLogger("escalation_risk.serving")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request fields come from `extra`, never ticket text."""

    FIELDS = ("request_id", "method", "path", "status", "duration_ms", "tickets", "remote")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(logger: logging.Logger = log) -> None:
    """JSON lines on stderr for `logger` (default the service's; idempotent; other loggers are left alone)."""
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, load_model: bool = True) -> Flask:
    """Build the service. The model is loaded here (not at import); without one /readyz says 503."""
    settings = settings or Settings()
    configure_logging()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False, TESTING=False)
    app.extensions["settings"] = settings
    app.extensions["policy"] = load_policy(settings.resolved_policy_path)  # bad policy: refuse to start
    # A bad integration mapping file stops the service here too, naming the file and field.
    app.extensions["integration_mapping"] = load_integration_mapping(settings.resolved_integration_mapping_path)
    metrics = app.extensions["metrics"] = ServiceMetrics(settings.prometheus_multiproc_dir)
    holder = app.extensions["model"] = ModelHolder(settings)
    app.extensions["background"] = BackgroundThreads()  # text retention, the live view's refresh
    if not settings.api_keys:
        log.warning("no API keys configured (ESCALATION_RISK_API_KEYS): scoring is open; "
                    "bind to loopback only (host %s)", settings.host)
        if settings.host not in LOOPBACK:
            raise RuntimeError(f"refusing to serve on {settings.host} without API keys; "
                               "set ESCALATION_RISK_API_KEYS or bind to 127.0.0.1")
    from serving import alert_routes, dashboard, ops, reports, routes, ticket_routes

    ticket_routes.open_store(app)  # before the model: its live history reads the store
    if load_model:
        outcome = holder.reload()
        metrics.reloads.labels(outcome="ok" if outcome.ok else "failed").inc()
        metrics.set_model(outcome.version)
    holder.start_polling(settings.reload_poll_seconds)
    register_request_hooks(app)
    register_error_handlers(app)
    routes.init_app(app)
    ticket_routes.init_app(app)
    alert_routes.init_app(app)  # a bad destinations file stops start-up here
    reports.init_app(app)
    ops.init_app(app)
    dashboard.init_app(app)
    return app


def close_app(app: Flask) -> list[str]:
    """Stop the app's background threads (model polling, text retention, the live view's refresh)
    and wait for a pass in progress to finish; returns the names of threads still running after
    the wait (none normally). Run at interpreter exit anyway (serving.background)."""
    still = app.extensions["model"].background.close()
    return still + app.extensions["background"].close()


def register_request_hooks(app: Flask) -> None:
    metrics: ServiceMetrics = app.extensions["metrics"]

    @app.before_request
    def start_request() -> None:
        g.request_id = (request.headers.get("X-Request-ID") or os.urandom(16).hex())[:64]
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else OTHER
        metrics.observe_request(endpoint, request.method, response.status_code, elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if endpoint not in ("/healthz", "/metrics", "/readyz") and log.isEnabledFor(logging.INFO):
            # makeRecord + handle, not log.info: the same record through the same handlers and
            # filters, without the caller lookup (a stack walk per request) that nobody reads here.
            log.handle(log.makeRecord(log.name, logging.INFO, "", 0, "request", (), None, extra={
                "request_id": g.get("request_id"), "method": request.method, "path": request.path,
                "status": response.status_code, "duration_ms": round(elapsed * 1000, 2),
                "tickets": g.get("n_tickets")}))
        return response


def register_admission(app: Flask) -> None:
    """At most `scoring_slots` heavy scoring requests (POST /v1/... with a body of 64 KiB or more,
    or of unknown length: batches) run at once in this worker; one more is answered 503 with
    Retry-After at once instead of queueing behind them, so a thread stays free for /healthz,
    /readyz, /metrics and single tickets however many batches arrive. Single tickets take
    milliseconds and are never shed. Installed for gunicorn's workers (create_served_app), whose
    thread count the default (threads - 1) is taken from."""
    settings: Settings = app.extensions["settings"]
    slots = threading.BoundedSemaphore(settings.scoring_slots or max(1, settings.threads - 1))

    @app.before_request
    def admit() -> Response | None:
        path = request.path
        if request.method != "POST" or not path.startswith("/v1/") or path.startswith("/v1/admin/"):
            return None
        length = request.content_length
        if length is not None and length < HEAVY_REQUEST_BYTES:
            return None
        if not slots.acquire(blocking=False):
            response = error_response(503, "overloaded", "the service is scoring as many batches as it can; "
                                      f"retry after {RETRY_AFTER_SECONDS} s")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        g.scoring_slot = True
        return None

    @app.teardown_request
    def release(exc: BaseException | None) -> None:
        if g.pop("scoring_slot", False):
            slots.release()


HEAVY_REQUEST_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = 1


def create_served_app() -> Flask:
    """gunicorn's entry point: create_app, with SIGHUP reloading the model in this worker.

    A SIGHUP that arrives while the worker is still starting is remembered and applied once
    the app exists, instead of killing the worker (the default action). Each worker records
    the version it serves in a folder shared by the workers (serving.live_model.WorkerFleet).
    """
    pending: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: pending.append(signum))
    app = create_app()
    register_admission(app)
    holder: ModelHolder = app.extensions["model"]
    holder.fleet = WorkerFleet.for_gunicorn_worker()  # so /v1/admin/reload reaches every worker
    holder.fleet.record(holder.bundle.version if holder.bundle else None,
                        holder.bundle.digest if holder.bundle else None)
    install_sighup_reload(app)
    if pending:
        os.kill(os.getpid(), signal.SIGHUP)
    return app


def install_sighup_reload(app: Flask) -> None:
    """SIGHUP reloads the model in this process (main thread only; a failed reload keeps the old one)."""
    holder: ModelHolder = app.extensions["model"]
    metrics: ServiceMetrics = app.extensions["metrics"]

    def on_hup(signum, frame) -> None:
        def run(stop: threading.Event) -> None:
            outcome = holder.reload()
            metrics.reloads.labels(outcome="ok" if outcome.ok else "failed").inc()
            metrics.set_model(holder.bundle.version if holder.bundle else None)

        background: BackgroundThreads = app.extensions["background"]
        if not background.stop.is_set():  # not once the app is closing
            background.start("sighup-reload", run)  # joined at exit, like the others

    signal.signal(signal.SIGHUP, on_hup)
