"""The live model: loaded and verified before it is used, swapped atomically on reload.

A reload builds the new bundle completely (manifest verified, models loaded) before the
swap, so requests always see either the old model or the new one; a failed reload leaves
the old model serving and is reported by /readyz, /v1/model and the log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from features.online import OnlineFeatures
from features.settings import Settings
from serving.model_store import BundleError, ModelBundle, load_bundle

log = logging.getLogger("escalation_risk.serving")


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    version: str | None
    source: str
    error: str | None = None


@dataclass(frozen=True)
class LiveModel:
    """A verified bundle and its pandas-free single-ticket features, swapped together."""

    bundle: ModelBundle
    online: OnlineFeatures
    predict_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


class ModelHolder:
    """Holds the current model; `live` is read without a lock (a single reference swap)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.live: LiveModel | None = None
        self.source: str | None = None
        self.registry_version: str | None = None  # the registered model version, when loaded from MLflow
        self.loaded_at: datetime | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._poll_thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def bundle(self) -> ModelBundle | None:
        live = self.live
        return live.bundle if live else None

    @property
    def ready(self) -> bool:
        return self.live is not None

    def resolve_source(self) -> tuple[Path, str, str | None]:
        """The MLflow champion (path, models:/ URI, registry version) when a tracking server is
        configured, else the local bundle (path, path, None)."""
        local = self.settings.resolved_model_path
        uri = self.settings.mlflow_tracking_uri
        if not uri:
            return local, str(local), None
        model_uri = f"models:/{self.settings.registered_model_name}@champion"
        try:
            import mlflow.artifacts
            from mlflow import MlflowClient

            # Tracking and registry both at the configured URI (MLflow's default would be ./mlflow.db).
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            version = client.get_model_version_by_alias(self.settings.registered_model_name, "champion")
            location = client.get_model_version_download_uri(version.name, version.version)
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=uri))
            candidates = [p.parent for p in root.rglob("manifest.json")]
            if not candidates:
                raise BundleError(f"{model_uri} holds no model bundle")
            return candidates[0], model_uri, str(version.version)
        except Exception as exc:  # any tracking-server failure: serve the local bundle instead
            log.warning("cannot load %s from %s (%s); falling back to the local bundle %s",
                        model_uri, uri, type(exc).__name__, local)
            return local, str(local), None

    def reload(self) -> ReloadOutcome:
        """Load and verify first, then swap; on failure keep serving the old model."""
        with self._lock:
            path, source, registry_version = self.resolve_source()
            try:
                bundle = load_bundle(path)
                live = LiveModel(bundle, OnlineFeatures(bundle.builder))
            except (BundleError, OSError, ValueError, KeyError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("model reload failed; keeping version %s: %s",
                          self.bundle.version if self.bundle else None, self.last_error)
                return ReloadOutcome(False, self.bundle.version if self.bundle else None, source, self.last_error)
            previous = self.bundle.version if self.bundle else None
            self.live, self.source, self.loaded_at, self.last_error = live, source, datetime.now(UTC), None
            self.registry_version = registry_version
            log.info("model loaded: version %s from %s (previous %s)", bundle.version, source, previous)
            return ReloadOutcome(True, bundle.version, source)

    def start_polling(self, interval: float) -> None:
        """Reload when models/current points at a different bundle (checked every `interval` s)."""
        if interval <= 0 or self._poll_thread is not None:
            return

        def poll() -> None:
            failed: Path | None = None
            while not self._stop.wait(interval):
                target = self.settings.resolved_model_path.resolve()
                if target != failed and (self.bundle is None or target != self.bundle.path):
                    failed = None if self.reload().ok else target  # do not retry a broken bundle

        self._poll_thread = threading.Thread(target=poll, name="model-poll", daemon=True)
        self._poll_thread.start()

    def stop_polling(self) -> None:
        self._stop.set()

