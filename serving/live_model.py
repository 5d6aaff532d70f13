"""The live model: loaded and verified before it is used, swapped atomically on reload.

A reload builds the new bundle completely (manifest verified, models loaded, one warm-up
ticket scored) before the swap, so requests always see either the old model or the new one;
a failed reload leaves the old model serving and is reported by /readyz, /v1/model and the log.

Under gunicorn each worker holds its own model. `WorkerFleet` lets the worker that handles
/v1/admin/reload tell its sibling workers to reload and wait until every one of them serves
the new content, so a completed reload means that only the new model answers. A model is
known by its version AND its manifest's sha256 (`ModelBundle.digest`): a bundle rewritten in
place under the same version name is a different model, and is reloaded everywhere too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bundle.model import BundleError, ModelBundle, load_bundle, manifest_digest
from bundle.tracking import tracking_server_problem
from features.history import LiveHistory
from features.online import TEXT_CACHE_ENTRIES, OnlineFeatures
from features.settings import Settings
from serving.background import BackgroundThreads

log = logging.getLogger("escalation_risk.serving")
WARM_UP_TICKET = {"ticket_id": "warm-up", "event_time": "2025-01-02T00:00:00+00:00",
                  "created_at": "2025-01-01T00:00:00+00:00", "subject": "warm-up", "description": "warm-up"}


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    version: str | None
    source: str
    error: str | None = None
    workers: tuple[dict, ...] = ()


@dataclass(frozen=True)
class LiveModel:
    """A verified bundle and its pandas-free single-ticket features, swapped together."""

    bundle: ModelBundle
    online: OnlineFeatures
    predict_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    live_history: LiveHistory | None = field(default=None, compare=False)  # the ticket store's overlay

    def sync_history(self, read_since=None) -> None:
        """Bring the as-of history up to date with the ticket store (no-op when the service is stateless);
        `read_since` reads the store's history log on the caller's transaction instead of a new connection."""
        if self.live_history is not None:
            self.live_history.sync(read_since=read_since)


class WorkerFleet:
    """One status file per gunicorn worker (pid -> loaded version), in a folder shared by the workers."""

    def __init__(self, state_dir: Path, master_pid: int):
        self.state_dir = Path(state_dir)
        self.master_pid = master_pid
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_gunicorn_worker(cls) -> WorkerFleet:
        """The folder is named after the gunicorn master, the parent of every worker."""
        master = os.getppid()
        return cls(Path(tempfile.gettempdir()) / f"escalation-risk-workers-{master}", master)

    def record(self, version: str | None, digest: str | None = None) -> None:
        """This worker serves `version` with manifest sha256 `digest` (None: no model)."""
        path = self.state_dir / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "version": version, "digest": digest}))
        os.replace(tmp, path)

    def sibling_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.master_pid).children()
        except psutil.Error:
            return []
        return [child.pid for child in children if child.pid != os.getpid()]

    def workers(self) -> list[dict]:
        """Every live worker (this one included) and the version it serves (None: not loaded yet)."""
        status = []
        for pid in sorted([os.getpid(), *self.sibling_pids()]):
            try:
                status.append(json.loads((self.state_dir / f"{pid}.json").read_text()))
            except (OSError, ValueError):
                status.append({"pid": pid, "version": None, "digest": None})
        return status

    def signal_siblings(self) -> None:
        for pid in self.sibling_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def wait_for(self, version: str, digest: str, timeout: float) -> tuple[bool, list[dict]]:
        """Until every worker serves this version with this content (True), or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while True:
            workers = self.workers()
            done = all(w["version"] == version and w.get("digest") == digest for w in workers)
            if done or time.monotonic() > deadline:
                return done, workers
            time.sleep(0.05)


class ModelHolder:
    """Holds the current model; `live` is read without a lock (a single reference swap)."""

    def __init__(self, settings: Settings, text_cache_entries: int = TEXT_CACHE_ENTRIES):
        self.settings = settings
        self.text_cache_entries = text_cache_entries  # per OnlineFeatures (the watcher keeps more)
        self.live: LiveModel | None = None
        self.source: str | None = None
        self.registry_version: str | None = None
        self.loaded_at: datetime | None = None
        self.last_error: str | None = None
        self.fleet: WorkerFleet | None = None
        self._lock = threading.Lock()
        self.background = BackgroundThreads()  # the polling thread
        self._client = None
        # The ticket store's history-log reader (TicketStore.read_history_since); None when stateless.
        self.history_source = None

    @property
    def bundle(self) -> ModelBundle | None:
        live = self.live
        return live.bundle if live else None

    @property
    def ready(self) -> bool:
        return self.live is not None

    def mlflow_client(self):
        if self._client is None:
            from mlflow import MlflowClient

            # Tracking and registry both at the configured URI (MLflow's default would be ./mlflow.db).
            uri = self.settings.mlflow_tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def champion_version(self) -> str:
        """The registry version that @champion points at (raises when there is none or no server)."""
        problem = tracking_server_problem(self.settings.mlflow_tracking_uri)
        if problem:
            raise ConnectionError(problem)
        name = self.settings.registered_model_name
        return str(self.mlflow_client().get_model_version_by_alias(name, "champion").version)

    def resolve_source(self) -> tuple[Path, str, str | None, Path | None]:
        """(bundle folder, source, registry version, temporary download folder to delete after loading).

        The MLflow champion when a tracking server is configured, else (or when it cannot be
        reached) the local bundle.
        """
        local = self.settings.resolved_model_path
        uri = self.settings.mlflow_tracking_uri
        if not uri:
            return local, str(local), None, None
        model_uri = f"models:/{self.settings.registered_model_name}@champion"
        download: Path | None = None
        try:
            import mlflow.artifacts

            client = self.mlflow_client()
            version = self.champion_version()
            location = client.get_model_version_download_uri(self.settings.registered_model_name, version)
            download = Path(tempfile.mkdtemp(prefix="escalation-risk-champion-"))
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=uri,
                                                            dst_path=str(download)))
            candidates = [p.parent for p in root.rglob("manifest.json")]
            if not candidates:
                raise BundleError(f"{model_uri} holds no model bundle")
            return candidates[0], f"{model_uri} (version {version})", version, download
        except Exception as exc:  # any tracking-server failure: serve the local bundle instead
            if download is not None:
                shutil.rmtree(download, ignore_errors=True)
            log.warning("cannot load %s from %s (%s: %s); falling back to the local bundle %s",
                        model_uri, uri, type(exc).__name__, str(exc)[:200], local)
            return local, str(local), None, None

    def reload(self) -> ReloadOutcome:
        """Load, verify and warm up first, then swap; on any failure keep serving the old model."""
        with self._lock:
            path, source, registry_version, download = self.resolve_source()
            try:
                bundle = load_bundle(path)
                online = OnlineFeatures(bundle.builder, self.text_cache_entries)
                live = LiveModel(bundle, online, live_history=self.attach_history(bundle))
                warm_up(live)
            except Exception as exc:  # a bad bundle must never take the serving model down with it
                log.error("model reload failed; keeping version %s: %s: %s",
                          self.bundle.version if self.bundle else None, type(exc).__name__, exc)
                self.last_error = without_paths(f"{type(exc).__name__}: {exc}")  # /readyz is open to anyone
                return ReloadOutcome(False, self.bundle.version if self.bundle else None, source, self.last_error)
            finally:
                if download is not None:
                    shutil.rmtree(download, ignore_errors=True)  # everything is in memory now
            previous = self.bundle.version if self.bundle else None
            self.live, self.source, self.loaded_at, self.last_error = live, source, datetime.now(UTC), None
            self.registry_version = registry_version
            if self.fleet is not None:
                self.fleet.record(bundle.version, bundle.digest)
            log.info("model loaded: version %s from %s (previous %s)", bundle.version, source, previous)
            return ReloadOutcome(True, bundle.version, source)

    def attach_history(self, bundle: ModelBundle) -> LiveHistory | None:
        """The store's history on top of the bundle's (everything the store holds is read now)."""
        if self.history_source is None:
            return None
        import pandas as pd

        from bundle.model import HISTORY

        live = LiveHistory(bundle.builder.history_, self.history_source, pd.read_parquet(bundle.path / HISTORY),
                           normalize=bool(getattr(bundle.builder, "category_normalization_", 0)))
        live.sync()
        return live

    def reload_everywhere(self, timeout: float = 60.0) -> ReloadOutcome:
        """Reload here; then make every sibling worker reload and wait until all serve the new version."""
        outcome = self.reload()
        if not outcome.ok or self.fleet is None:
            return outcome
        self.fleet.signal_siblings()
        digest = self.bundle.digest
        converged, workers = self.fleet.wait_for(outcome.version, digest, timeout)
        if converged:
            return ReloadOutcome(True, outcome.version, outcome.source, None, tuple(workers))
        behind = ", ".join(f"pid {w['pid']} on {w['version']} ({(w.get('digest') or '')[:12]})"
                           for w in workers if (w["version"], w.get("digest")) != (outcome.version, digest))
        error = f"this worker serves {outcome.version} but not every worker switched within {timeout:.0f} s: {behind}"
        return ReloadOutcome(False, outcome.version, outcome.source, error, tuple(workers))

    def start_polling(self, interval: float) -> None:
        """Reload when models/current points at another bundle, or @champion moves (every `interval` s)."""
        if interval <= 0 or self.background.threads:
            return

        def changed_target() -> object | None:
            if self.settings.mlflow_tracking_uri:
                try:
                    version = self.champion_version()
                except Exception:  # no server or no champion: keep what is serving
                    return None
                return version if version != self.registry_version else None
            target = self.settings.resolved_model_path.resolve()
            if self.bundle is None or target != self.bundle.path:
                return target
            digest = manifest_digest(target)  # rewritten in place under the same name?
            return (target, digest) if digest is not None and digest != self.bundle.digest else None

        def poll(stop: threading.Event) -> None:
            failed: object | None = None
            while not stop.wait(interval):
                target = changed_target()
                if target is not None and target != failed:
                    failed = None if self.reload().ok else target  # do not retry a broken bundle

        self.background.start("model-poll", poll)

    def stop_polling(self) -> None:
        """Stop polling and wait for a reload in progress to finish."""
        self.background.close()


def without_paths(message: str) -> str:
    """Keep only the last part of each absolute path (the bundle or file name) in a message others can read."""
    return _ABSOLUTE_PATH.sub("", message)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/:;,'\"()]+)+/(?=[^\s/])")


def warm_up(live: LiveModel) -> None:
    """Score one made-up ticket through the serving path, so a bundle that loads but cannot score is refused."""
    from bundle.online_score import score_many

    try:
        scored = score_many(live.bundle, live.online, [dict(WARM_UP_TICKET)], lock=live.predict_lock)
    except Exception as exc:
        raise BundleError(f"bundle {live.bundle.path.name} loads but cannot score a ticket "
                          f"(incompatible with this code's features?): {type(exc).__name__}: {exc}") from exc
    if not 0.0 <= scored[0]["escalation_probability"] <= 1.0:
        raise BundleError(f"bundle {live.bundle.path.name} gives a probability outside [0, 1] on a warm-up ticket")
