"""Model bundles: a folder with a sha256 manifest, verified before anything in it is loaded.

A bundle holds the two LightGBM models in LightGBM's text format, the feature builder's
learned state (feature_builder.json and feature_builder.npz: plain values and float64 arrays),
the calibration map, the bands, the as-of history table (Parquet) and metadata. Nothing in a
bundle is ever unpickled or executed: bundles written before the builder state was data (a
pickled feature_builder.joblib) are refused with a message to retrain.
Without a priority target (an export with no priority) there is no priority model:
`priority_classes` is empty and every ticket's predicted priority is None.
`ModelBundle.score` is the one scoring path (batch scoring, the MLflow pyfunc and the
service all call it): a whole batch goes through the builder and each model once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from bundle.contributions import TreePaths
from bundle.fast_predict import SingleRowPredictor
from features.build import MISSING, UNSEEN, FeatureBuilder
from features.schema import validate_events
from features.snapshots import SNAPSHOT_TIME

MANIFEST = "manifest.json"
ESCALATION_MODEL = "escalation_model.txt"
PRIORITY_MODEL = "priority_model.txt"
BUILDER_STATE = "feature_builder.json"
BUILDER_ARRAYS = "feature_builder.npz"
PICKLED_BUILDER = "feature_builder.joblib"  # bundles of earlier versions: refused, never read
HISTORY = "history.parquet"
METADATA = "metadata.json"
FEATURE_LABELS = {
    "customer_messages": "customer messages so far",
    "agent_messages": "agent replies so far",
    "reassignment_count": "times reassigned",
    "reopen_count": "times reopened",
    "age_hours": "hours since the ticket was opened",
    "hours_to_sla": "hours left before the SLA is due",
    "sla_breached": "SLA already breached",
    "customer_tickets_7d": "customer's other tickets in the last 7 days",
    "customer_tickets_30d": "customer's other tickets in the last 30 days",
    "customer_tickets_90d": "customer's other tickets in the last 90 days",
    "customer_category_tickets_30d": "customer's tickets on the same topic in 30 days",
    "customer_escalation_rate": "customer's past escalation rate",
    "agent_escalation_rate": "agent's past escalation rate",
    "agent_tickets_total": "agent's tickets handled (experience)",
    "group_escalation_rate": "team's past escalation rate",
    "sentiment_description": "sentiment of the ticket text",
    "sentiment_last_message": "sentiment of the latest customer message",
    "priority_rank": "current priority",
    "customer_tier": "customer tier",
}


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or does not match its manifest."""


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path) -> dict[str, str]:
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(bundle_dir)): hash_file(p) for p in files}
    (bundle_dir / MANIFEST).write_text(json.dumps({"sha256": manifest}, indent=2))
    return manifest


def manifest_digest(bundle_dir: Path) -> str | None:
    """sha256 of the bundle's manifest: it names the bundle's exact content (None without a manifest)."""
    try:
        return hashlib.sha256((Path(bundle_dir) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def verify_manifest(bundle_dir: Path) -> str:
    """Refuse a bundle whose files differ from its manifest, or that has files it does not list;
    return the manifest's sha256 (the content's identity, even under an unchanged version name)."""
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir} has no {MANIFEST}; not a model bundle")
    raw = manifest_path.read_bytes()
    try:
        expected = json.loads(raw)["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{MANIFEST} of {bundle_dir.name} is not a manifest ({type(exc).__name__})") from exc
    actual = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file() and p.name != MANIFEST}
    problems = [f"missing {name}" for name in sorted(set(expected) - actual)]
    problems += [f"unlisted {name}" for name in sorted(actual - set(expected))]
    problems += [
        f"sha256 mismatch in {name}"
        for name in sorted(set(expected) & actual)
        if hash_file(bundle_dir / name) != expected[name]
    ]
    if problems:
        raise BundleError(f"model bundle {bundle_dir} failed verification: {'; '.join(problems)}")
    return hashlib.sha256(raw).hexdigest()


def apply_calibration(calibration: dict, prob: np.ndarray) -> np.ndarray:
    if calibration["method"] == "isotonic":
        return np.interp(prob, calibration["x"], calibration["y"])
    if calibration["method"] == "sigmoid":
        logit = np.log(np.clip(prob, 1e-9, 1 - 1e-9) / np.clip(1 - prob, 1e-9, 1))
        return 1 / (1 + np.exp(-(calibration["a"] * logit + calibration["b"])))
    return prob


def fit_calibration(raw_prob: np.ndarray, y_true: np.ndarray, method: str | None) -> dict:
    """A monotone map from raw to calibrated probability, stored as plain numbers (no pickle)."""
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw_prob, y_true)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        logit = np.log(np.clip(raw_prob, 1e-9, 1 - 1e-9) / np.clip(1 - raw_prob, 1e-9, 1)).reshape(-1, 1)
        lr = LogisticRegression(C=1e6).fit(logit, y_true)
        return {"method": "sigmoid", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    return {"method": "none"}


def assign_bands(score: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """high / medium / low by the raw-score cut-offs chosen at training (training.thresholds)."""
    score = np.asarray(score, dtype=float)
    level = (score >= thresholds["medium"]).astype(np.intp) + (score >= thresholds["high"])
    return BANDS[level]


BANDS = np.array(["low", "medium", "high"])


@lru_cache(maxsize=4096)
def label_feature(name: str) -> str:
    if name in FEATURE_LABELS:
        return FEATURE_LABELS[name]
    if name.startswith("last_message_cue_"):
        return f"latest customer message mentions {name.removeprefix('last_message_cue_').replace('_', ' ')}"
    if name.startswith("cue_"):
        return f"ticket text mentions {name.removeprefix('cue_').replace('_', ' ')}"
    if name.startswith("text_svd_"):
        return f"wording of the ticket (text component {name.removeprefix('text_svd_')})"
    return name.replace("_", " ")


@dataclass
class ScoredFeatures:
    """What both models say about a feature matrix, row-aligned."""

    raw: np.ndarray
    probability: np.ndarray
    band: np.ndarray
    escalate_now: np.ndarray
    contributions: np.ndarray
    top: np.ndarray
    priority_probabilities: np.ndarray
    priority_predicted: np.ndarray


@dataclass
class ModelBundle:
    path: Path
    metadata: dict
    builder: FeatureBuilder
    escalation_model: lgb.Booster
    priority_model: lgb.Booster | None  # None: trained without a priority target
    digest: str = ""  # sha256 of the manifest it was verified against (verify_manifest)

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def build_features(self, tickets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validate live tickets (canonical rows), keeping their order, and build the model's features.
        Categorical values are normalised as the builder's training data was (none before it existed)."""
        result = validate_events(tickets, sort=False,
                                 normalize=bool(getattr(self.builder, "category_normalization_", 0)))
        if len(result.rejects):
            details = "; ".join(
                f"row {r.row} {r.column}: {r.reason}" for r in result.rejects.head(20).itertuples()
            )
            raise ValueError(f"invalid ticket(s): {details}")
        rows = result.events
        if SNAPSHOT_TIME not in rows:
            rows[SNAPSHOT_TIME] = rows["event_time"]
        return rows, self.builder.transform(rows)

    @cached_property
    def paths(self) -> TreePaths:
        """The escalation model's per-leaf path contributions, compiled on first use."""
        return TreePaths(self.escalation_model)

    @cached_property
    def priority_single_row(self) -> SingleRowPredictor | None:
        return SingleRowPredictor(self.priority_model) if self.priority_model is not None else None

    def score_features(self, features: pd.DataFrame | np.ndarray, n_reasons: int = 3,
                       reasons: str = "path") -> ScoredFeatures:
        """Both models once on the whole matrix; `reasons` is "path" (precomputed per leaf) or "shap"."""
        if reasons == "shap":
            raw = self.escalation_model.predict(features)
            contributions = self.escalation_model.predict(features, pred_contrib=True)[:, :-1]
        elif reasons == "path":
            raw, contributions = self.paths.explain(features)
            contributions = contributions[:, :-1]
        else:
            raise ValueError(f"unknown reasons method {reasons!r}; expected 'path' or 'shap'")
        thresholds = self.metadata["thresholds"]
        classes = self.metadata["priority_classes"]
        if self.priority_model is None:
            priority_prob = np.zeros((len(features), 0))
        elif isinstance(features, np.ndarray) and len(features) == 1:
            priority_prob = self.priority_single_row.predict(features[0])[None, :]
        else:
            priority_prob = self.priority_model.predict(features)
        return ScoredFeatures(
            raw=raw,
            probability=apply_calibration(self.metadata["calibration"], raw),
            band=assign_bands(raw, thresholds),
            escalate_now=raw >= thresholds["escalate_now"],
            contributions=contributions,
            top=np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :n_reasons],
            priority_probabilities=priority_prob,
            priority_predicted=(np.asarray(classes, dtype=object)[np.argmax(priority_prob, axis=1)] if classes
                                else np.full(len(features), None, dtype=object)),
        )

    def score(self, tickets: pd.DataFrame, n_reasons: int = 3, reasons: str = "path") -> pd.DataFrame:
        """Probability, band, escalate-now, priority and reasons for each ticket, in input order."""
        rows, features = self.build_features(tickets)
        scored = self.score_features(features, n_reasons, reasons)
        names = self.escalation_model.feature_name()
        labels = [label_feature(name) for name in names]
        categorical = {c for c in self.builder.categorical_features_ if c in rows}
        reasons_out = []
        for i, columns in enumerate(scored.top):
            reasons_out.append(
                [
                    {
                        "feature": names[j],
                        "label": labels[j],
                        "value": show_value(features.iat[i, features.columns.get_loc(names[j])],
                                            rows[names[j]].iat[i] if names[j] in categorical else None),
                        "effect": round(float(scored.contributions[i, j]), 4),
                        "direction": "raises risk" if scored.contributions[i, j] > 0 else "lowers risk",
                    }
                    for j in columns
                ]
            )
        out = pd.DataFrame(
            {
                "ticket_id": rows["ticket_id"].astype(str).to_numpy(),
                "escalation_probability": scored.probability,
                "band": scored.band,
                "escalate_now": scored.escalate_now,
                "priority_predicted": scored.priority_predicted,
                "reasons": reasons_out,
            }
        )
        for k, name in enumerate(self.metadata["priority_classes"]):
            out[f"priority_probability_{name}"] = scored.priority_probabilities[:, k]
        return out


def show_value(value: object, raw: object = None) -> object:
    """A feature's value as shown in a reason: a missing value reads "not set" (never null), a
    category not seen in training "other"; `raw` is the ticket's own value of a categorical column."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return UNSEEN if raw is not None and raw is not pd.NA and raw == raw else MISSING
    return value


def check_lightgbm_text(path: Path, text: bytes) -> None:
    """Refuse what is not a complete LightGBM text model before LightGBM parses it.

    LightGBM aborts the whole process (not an exception) on some truncated files, so the
    structure is checked here: the header, every tree's byte size as the header lists it,
    then the end markers.
    """
    if not text.startswith((b"tree\n", b"tree\r\n")):
        raise BundleError(f"{path.name} is not a LightGBM text model (it starts with {text[:8]!r}, "
                          "not 'tree'); refusing to load it")
    sizes = re.search(rb"^tree_sizes=([0-9 ]*)\r?$", text, re.MULTILINE)
    first_tree = text.find(b"\nTree=0")
    if sizes is None or first_tree < 0:
        raise BundleError(f"{path.name} is not a valid LightGBM model (no tree_sizes or trees; truncated?)")
    trees_end = first_tree + 1 + sum(int(n) for n in sizes.group(1).split())
    if not text[trees_end:].lstrip(b"\r\n").startswith(b"end of trees") or b"\nend of parameters" not in text:
        raise BundleError(f"{path.name} is not a valid LightGBM model (truncated: the trees or the end "
                          "markers are incomplete)")


def load_booster(path: Path) -> lgb.Booster:
    """A complete LightGBM text model, and nothing else: pickles or binaries in its place are refused unread."""
    text = path.read_bytes()
    check_lightgbm_text(path, text)
    try:
        return lgb.Booster(model_str=text.decode())
    except (lgb.basic.LightGBMError, ValueError) as exc:  # ValueError: bad UTF-8 or pandas_categorical JSON
        raise BundleError(f"{path.name} is not a valid LightGBM model: {exc}") from exc


def check_feature_schema(metadata: dict, builder: FeatureBuilder, models: dict[str, lgb.Booster]) -> None:
    """The builder, both models and the metadata must agree on the feature list, name by name, in order."""
    expected = list(metadata.get("features") or [])
    produced = list(getattr(builder, "feature_names_", []) or [])
    for name, features in (("feature builder", produced), *((n, m.feature_name()) for n, m in models.items())):
        if list(features) != expected:
            missing = [f for f in expected if f not in features][:5]
            extra = [f for f in features if f not in expected][:5]
            raise BundleError(f"incompatible feature schema: the {name} has {len(features)} features, the "
                              f"metadata lists {len(expected)} (missing {missing}, unexpected {extra})")


def load_builder(bundle_dir: Path) -> FeatureBuilder:
    """The feature builder from its JSON state and .npz arrays (no pickles: `allow_pickle=False`)."""
    if (bundle_dir / PICKLED_BUILDER).exists() and not (bundle_dir / BUILDER_STATE).exists():
        raise BundleError(f"{bundle_dir.name} was written by an earlier version: its feature builder is a pickle "
                          f"({PICKLED_BUILDER}), and pickles are never loaded because they can run code. "
                          "Retrain to get a bundle of the current format (`make train`, or "
                          "`escalation-risk train`)")
    try:
        values = json.loads((bundle_dir / BUILDER_STATE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{BUILDER_STATE} cannot be read: {exc}") from exc
    try:
        with np.load(bundle_dir / BUILDER_ARRAYS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:  # ValueError: an object array, which would need unpickling
        raise BundleError(f"{BUILDER_ARRAYS} is not a plain NumPy array archive: {exc}") from exc
    if any(array.dtype != np.float64 for array in arrays.values()):
        raise BundleError(f"{BUILDER_ARRAYS} holds arrays that are not float64")
    try:
        return FeatureBuilder.from_state(values, arrays)
    except ValueError as exc:
        raise BundleError(f"{BUILDER_STATE} is not a valid feature builder state: {str(exc)[:500]}") from exc


def load_bundle(bundle_dir: Path) -> ModelBundle:
    """Verify the manifest first, then load; a tampered, partial, mismatched or pickled bundle is refused."""
    bundle_dir = Path(bundle_dir).resolve()
    if not bundle_dir.is_dir():
        raise BundleError(f"no model bundle at {bundle_dir}; run `make train` first")
    digest = verify_manifest(bundle_dir)
    models = {"escalation model": load_booster(bundle_dir / ESCALATION_MODEL)}
    if (bundle_dir / PRIORITY_MODEL).exists():  # listed in the verified manifest whenever it was written
        models["priority model"] = load_booster(bundle_dir / PRIORITY_MODEL)
    try:
        metadata = json.loads((bundle_dir / METADATA).read_text())
    except ValueError as exc:
        raise BundleError(f"{METADATA} is not valid JSON: {exc}") from exc
    builder = load_builder(bundle_dir)
    if "priority model" not in models and metadata.get("priority_classes"):
        raise BundleError(f"{PRIORITY_MODEL} is missing, yet the metadata lists priority classes "
                          f"{metadata['priority_classes']}")
    check_feature_schema(metadata, builder, models)
    builder.fit_history(pd.read_parquet(bundle_dir / HISTORY))
    return ModelBundle(
        path=bundle_dir,
        metadata=metadata,
        builder=builder,
        escalation_model=models["escalation model"],
        priority_model=models.get("priority model"),
        digest=digest,
    )
