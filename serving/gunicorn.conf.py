"""gunicorn settings for `make serve`: threaded workers, one OpenMP thread each, never debug.

Run: gunicorn -c serving/gunicorn.conf.py 'serving.app:create_served_app()'
SIGHUP to the master is forwarded to every worker, which reloads the model in place
(verified first; a failed reload keeps the old model), instead of gunicorn's worker restart.
"""

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from features.settings import Settings

_settings = Settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
preload_app = False  # each worker loads and verifies the model itself, after fork
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None  # the app writes one structured JSON line per request
errorlog = "-"
loglevel = "info"
# LightGBM uses OpenMP; with several workers on few cores, one thread each avoids oversubscription.
raw_env = ["OMP_NUM_THREADS=1"]
# No gunicornc control socket: its default path is shared by every gunicorn of the user, and reloads
# go through SIGHUP or /v1/admin/reload.
control_socket_disable = True
_created_dirs: list[Path] = []


def on_starting(server):
    """Prepare the metrics directory the workers share, and replace gunicorn's HUP (restart all
    workers) with an in-place model reload in each worker.

    Development switches that would re-execute code on file changes are refused here.
    """
    if server.cfg.reload:
        raise RuntimeError("--reload is a development switch; the scoring service refuses it")
    if _settings.state == "on":
        from serving.store.db import upgrade_database

        upgrade_database(_settings.resolved_store_url)  # once, before the workers open the ticket store
    metrics_dir = _settings.prometheus_multiproc_dir
    if metrics_dir is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="escalation-risk-metrics-"))
        _created_dirs.append(metrics_dir)  # ours: removed on exit
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # values of an earlier server would be summed in
        stale.unlink()
    # Workers are forked after this and import prometheus_client with it set (multi-process mode).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server.log.info("Prometheus multi-process metrics in %s", metrics_dir)

    def forward_hup():
        server.log.info("SIGHUP: asking %d worker(s) to reload the model", len(server.WORKERS))
        for pid in list(server.WORKERS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    server.handle_hup = forward_hup



def child_exit(server, worker):
    """A dead worker's live gauges (the loaded model version) leave /metrics."""
    # Imported here, not at the top: the master must not import prometheus_client before
    # PROMETHEUS_MULTIPROC_DIR is set, or forked workers would inherit single-process mode.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder we made and the folder where the workers recorded their model
    versions (serving.live_model.WorkerFleet)."""
    for created in _created_dirs:
        shutil.rmtree(created, ignore_errors=True)
    shutil.rmtree(Path(tempfile.gettempdir()) / f"escalation-risk-workers-{os.getpid()}", ignore_errors=True)
