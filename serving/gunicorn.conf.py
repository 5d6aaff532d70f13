"""gunicorn settings for `make serve`: threaded workers, one OpenMP thread each, never debug.

Run: gunicorn -c serving/gunicorn.conf.py 'serving.app:create_served_app()'
SIGHUP to the master is forwarded to every worker, which reloads the model in place
(verified first; a failed reload keeps the old model), instead of gunicorn's worker restart.
"""

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
from pathlib import Path

from features.settings import Settings

_settings = Settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# gthread with a read deadline per request, pipelining and JSON protocol errors (serving/worker.py).
worker_class = "serving.worker.ServingWorker"
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
_held_locks: list[int] = []
INSTANCE_PREFIX = "instance-"
LOCK_NAME = ".instance.lock"


def instance_metrics_dir(parent: Path) -> Path:
    """A metrics folder of this instance's own inside `parent`, held by a lock for the instance's life.

    Several instances may be given one PROMETHEUS_MULTIPROC_DIR: each writes into its own
    `instance-*` subfolder, so starting one never wipes another's files. Subfolders whose lock
    is free belong to instances that are gone and are removed.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for other in parent.glob(f"{INSTANCE_PREFIX}*"):
        lock_path = other / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue  # being created right now, or not ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live instance holds it
            continue
        shutil.rmtree(other, ignore_errors=True)
        os.close(fd)
    own = Path(tempfile.mkdtemp(prefix=INSTANCE_PREFIX, dir=parent))
    fd = os.open(own / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # forked workers share it; released when the last one exits
    _held_locks.append(fd)
    return own


def on_starting(server):
    """Prepare this instance's metrics folder, and replace gunicorn's HUP (restart all workers)
    with an in-place model reload in each worker.

    Development switches that would re-execute code on file changes are refused here.
    """
    if server.cfg.reload:
        raise RuntimeError("--reload is a development switch; the scoring service refuses it")
    if _settings.state == "on":
        from serving.store.db import upgrade_database

        upgrade_database(_settings.resolved_store_url)  # once, before the workers open the ticket store
    parent = _settings.prometheus_multiproc_dir
    if parent is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="escalation-risk-metrics-"))
    else:
        metrics_dir = instance_metrics_dir(parent)
    _created_dirs.append(metrics_dir)  # ours alone: removed on exit
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
