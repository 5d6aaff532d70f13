"""Model bundles: a folder with a sha256 manifest, verified before anything in it is loaded.

A bundle holds the LightGBM models in LightGBM's text format (an escalation model per label,
features.labels, and the priority model), the feature builder's learned state
(feature_builder.json and feature_builder.npz: plain values and float64 arrays), each label's
calibration map and bands, the as-of history table (Parquet, with each label's own outcome
columns) and metadata. Nothing in a bundle is ever unpickled or executed: bundles written
before the builder state was data (a pickled feature_builder.joblib) are refused with a
message to retrain.
Without a priority target (an export with no priority) there is no priority model:
`priority_classes` is empty and every ticket's predicted priority is None.
`ModelBundle.score` is the one scoring path (batch scoring, the MLflow pyfunc and the
service all call it): a whole batch goes through the builder and each model once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from bundle.contributions import StackedPaths, TreePaths
from bundle.fast_predict import SingleRowPredictor
from features.build import MISSING, UNSEEN, FeatureBuilder
from features.labels import ESCALATION_TYPES, RATE_FEATURES, SEPARATOR
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


def label_model_file(label: str) -> str:
    """A non-primary label's model file (the primary's is ESCALATION_MODEL)."""
    return f"escalation_model.{label}.txt"


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
    base, _, label = name.partition(SEPARATOR)
    if label and base in RATE_FEATURES:  # a rate counted for one label's outcome (features.labels)
        return f"{label_feature(base)} ({label.replace('_', ' ')} escalations)"
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
class LabelModel:
    """One label's model, as the bundle's metadata describes it (features.labels)."""

    name: str
    escalation_type: str | None
    booster: lgb.Booster
    features: list[str]          # its input columns, in its order
    columns: np.ndarray | None   # their positions in the bundle's feature matrix; None = all, in order
    calibration: dict
    thresholds: dict[str, float]
    definition: str = ""

    @cached_property
    def paths(self) -> TreePaths:
        """Per-leaf path contributions, compiled on first use."""
        return TreePaths(self.booster)

    @cached_property
    def feature_titles(self) -> list[str]:
        """Each of its features as a reason names it (label_feature), in its order."""
        return [label_feature(name) for name in self.features]

    def column_list(self, n_columns: int) -> list[int]:
        """Its columns' positions in a matrix of `n_columns` features, as a list."""
        return list(range(n_columns)) if self.columns is None else self.columns.tolist()

    @cached_property
    def calibration_arrays(self) -> dict:
        """The calibration with an isotonic map's points as arrays (converted once, not per call)."""
        if self.calibration["method"] != "isotonic":
            return self.calibration
        return {**self.calibration, "x": np.asarray(self.calibration["x"], dtype=float),
                "y": np.asarray(self.calibration["y"], dtype=float)}

    def select(self, features: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
        """Its columns of the bundle's feature matrix."""
        if self.columns is None:
            return features
        return features.iloc[:, self.columns] if isinstance(features, pd.DataFrame) else features[:, self.columns]

    def score(self, features: pd.DataFrame | np.ndarray, n_reasons: int, reasons: str) -> LabelScores:
        """Raw and calibrated probability, band, contributions and the top reasons' indices (into
        `self.features`) for each row of the bundle's feature matrix."""
        own = self.select(features)
        if reasons == "shap":
            raw = self.booster.predict(own)
            contributions = self.booster.predict(own, pred_contrib=True)
        elif reasons == "path":
            raw, contributions = self.paths.explain(own)
        elif reasons == "none":  # predict() gives the path sums' raw score bit for bit (tests/bundle), faster
            raw = self.booster.predict(own)
            return self.finish_scores(raw, np.zeros((len(raw), len(self.features) + 1)), 0)
        else:
            raise ValueError(f"unknown reasons method {reasons!r}; expected 'path', 'shap' or 'none'")
        return self.finish_scores(raw, contributions, n_reasons)

    def finish_scores(self, raw: np.ndarray, contributions: np.ndarray, n_reasons: int) -> LabelScores:
        """LabelScores from raw scores (n,) and contributions (n, features + 1; the last is the bias)."""
        contributions = contributions[:, :-1]
        return LabelScores(
            raw=raw,
            probability=apply_calibration(self.calibration_arrays, raw),
            band=assign_bands(raw, self.thresholds),
            escalate_now=raw >= self.thresholds["escalate_now"],
            contributions=contributions,
            top=(np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :n_reasons] if n_reasons
                 else np.zeros((len(raw), 0), dtype=np.intp)),
        )


@dataclass
class LabelScores:
    """One label's model on a feature matrix, row-aligned; `top` indexes its LabelModel.features."""

    raw: np.ndarray
    probability: np.ndarray
    band: np.ndarray
    escalate_now: np.ndarray
    contributions: np.ndarray
    top: np.ndarray


@dataclass
class ScoredFeatures(LabelScores):
    """What the models say about a feature matrix, row-aligned: the primary label's scores in the
    inherited fields (`top` indexes the primary model's features), every label's in `types`."""

    priority_probabilities: np.ndarray
    priority_predicted: np.ndarray
    types: dict[str, LabelScores] = field(default_factory=dict)


@dataclass
class ModelBundle:
    path: Path
    metadata: dict
    builder: FeatureBuilder
    escalation_model: lgb.Booster  # the primary label's
    priority_model: lgb.Booster | None  # None: trained without a priority target
    digest: str = ""  # sha256 of the manifest it was verified against (verify_manifest)
    labels: list[LabelModel] = field(default_factory=list)  # every label's, the primary first
    priority_columns: np.ndarray | None = None  # the priority model's columns of the matrix; None = all

    def __post_init__(self) -> None:
        if not self.labels:  # a bundle of one label (before labels were a list)
            self.labels = [LabelModel(name=self.metadata.get("label", {}).get("name", "escalation"),
                                      escalation_type=None, booster=self.escalation_model,
                                      features=list(self.escalation_model.feature_name()), columns=None,
                                      calibration=self.metadata["calibration"],
                                      thresholds=self.metadata["thresholds"])]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def primary(self) -> LabelModel:
        return self.labels[0]

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

    @property
    def paths(self) -> TreePaths:
        """The primary escalation model's per-leaf path contributions, compiled on first use."""
        return self.primary.paths

    @cached_property
    def stacked_paths(self) -> StackedPaths:
        """Every label's path contributions in one table, for one ticket at a time."""
        return StackedPaths([label.paths for label in self.labels], [label.columns for label in self.labels])

    @cached_property
    def priority_single_row(self) -> SingleRowPredictor | None:
        return SingleRowPredictor(self.priority_model) if self.priority_model is not None else None

    def score_features(self, features: pd.DataFrame | np.ndarray, n_reasons: int = 3,
                       reasons: str = "path") -> ScoredFeatures:
        """Every model once on the whole matrix; `reasons` is "path" (precomputed per leaf), "shap", or
        "none" (no reasons: the same probabilities and bands, contributions all zero, no top features)."""
        if (reasons == "path" and isinstance(features, np.ndarray) and len(features) == 1 and len(self.labels) > 1
                and min(self.stacked_paths.n_features) >= n_reasons):
            types = self.score_labels_one(features[0], n_reasons)
        else:
            types = {label.name: label.score(features, n_reasons, reasons) for label in self.labels}
        own = features
        if self.priority_columns is not None:
            own = (features.iloc[:, self.priority_columns] if isinstance(features, pd.DataFrame)
                   else features[:, self.priority_columns])
        classes = self.metadata["priority_classes"]
        if self.priority_model is None:
            priority_prob = np.zeros((len(features), 0))
        elif isinstance(own, np.ndarray) and len(own) == 1:
            priority_prob = self.priority_single_row.predict(own[0])[None, :]
        else:
            priority_prob = self.priority_model.predict(own)
        primary = types[self.primary.name]
        return ScoredFeatures(
            raw=primary.raw,
            probability=primary.probability,
            band=primary.band,
            escalate_now=primary.escalate_now,
            contributions=primary.contributions,
            top=primary.top,
            priority_probabilities=priority_prob,
            priority_predicted=(np.asarray(classes, dtype=object)[np.argmax(priority_prob, axis=1)] if classes
                                else np.full(len(features), None, dtype=object)),
            types=types,
        )

    def score_labels_one(self, row: np.ndarray, n_reasons: int) -> dict[str, LabelScores]:
        """`LabelModel.score` of every label for one feature row (float64, 1-D), with path reasons,
        computed for all labels at once (StackedPaths); the same values, bit for bit
        (tests/serving/test_reasons.py). Needs every label to have at least `n_reasons` features."""
        stacked = self.stacked_paths
        raw, sums = stacked.explain_one(row)
        n_features = stacked.n_features
        width = max(n_features)
        contributions = sums[:, :width].copy()
        for k, n in enumerate(n_features):
            contributions[k, n:] = 0.0  # its bias and padding: ranked after its own zero contributions
        top = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :n_reasons]
        thresholds = self.stacked_thresholds
        level = (raw >= thresholds[0]).astype(np.intp) + (raw >= thresholds[1])
        bands, escalate_now = BANDS[level], raw >= thresholds[2]
        probability = raw.copy()  # labels without calibration keep the raw score
        for indices, calibration in self.stacked_calibrations:
            probability[indices] = apply_calibration(calibration, raw[indices])
        return {label.name: LabelScores(raw=raw[k:k + 1], probability=probability[k:k + 1], band=bands[k:k + 1],
                                        escalate_now=escalate_now[k:k + 1],
                                        contributions=contributions[k:k + 1, :n_features[k]], top=top[k:k + 1])
                for k, label in enumerate(self.labels)}

    @cached_property
    def stacked_calibrations(self) -> list[tuple[np.ndarray, dict]]:
        """(label indices, calibration) groups: each isotonic label alone, the sigmoid ones together
        (their `a` and `b` as arrays, so `apply_calibration` maps them in one call)."""
        groups = [(np.array([k]), label.calibration_arrays) for k, label in enumerate(self.labels)
                  if label.calibration["method"] == "isotonic"]
        sigmoid = [k for k, label in enumerate(self.labels) if label.calibration["method"] == "sigmoid"]
        if sigmoid:
            groups.append((np.array(sigmoid), {"method": "sigmoid",
                                               "a": np.array([self.labels[k].calibration["a"] for k in sigmoid]),
                                               "b": np.array([self.labels[k].calibration["b"] for k in sigmoid])}))
        return groups

    @cached_property
    def stacked_thresholds(self) -> np.ndarray:
        """(3, labels): each label's medium, high and escalate-now raw-score cut-offs."""
        return np.array([[label.thresholds[name] for label in self.labels]
                         for name in ("medium", "high", "escalate_now")])

    def score(self, tickets: pd.DataFrame, n_reasons: int = 3, reasons: str = "path") -> pd.DataFrame:
        """Probability, band, escalate-now, priority and reasons for each ticket, in input order; with
        several labels, also each label's probability, band and escalate-now (`<field>__<label>`)
        and `likely_type`, the escalation type of the most probable typed label."""
        rows, features = self.build_features(tickets)
        scored = self.score_features(features, n_reasons, reasons)
        categorical = {c for c in self.builder.categorical_features_ if c in rows}

        def explain(label: LabelModel, label_scores: LabelScores) -> list[list[dict]]:
            names = label.features
            out = []
            for i, columns in enumerate(label_scores.top):
                out.append([
                    {
                        "feature": names[j],
                        "label": label_feature(names[j]),
                        "value": show_value(features.iat[i, features.columns.get_loc(names[j])],
                                            rows[names[j]].iat[i] if names[j] in categorical else None),
                        "effect": round(float(label_scores.contributions[i, j]), 4),
                        "direction": "raises risk" if label_scores.contributions[i, j] > 0 else "lowers risk",
                    }
                    for j in columns
                ])
            return out

        out = pd.DataFrame(
            {
                "ticket_id": rows["ticket_id"].astype(str).to_numpy(),
                "escalation_probability": scored.probability,
                "band": scored.band,
                "escalate_now": scored.escalate_now,
                "priority_predicted": scored.priority_predicted,
                "reasons": explain(self.primary, scored.types[self.primary.name]),
            }
        )
        for k, name in enumerate(self.metadata["priority_classes"]):
            out[f"priority_probability_{name}"] = scored.priority_probabilities[:, k]
        if len(self.labels) > 1:
            for label in self.labels:
                label_scores = scored.types[label.name]
                out[f"escalation_probability__{label.name}"] = label_scores.probability
                out[f"band__{label.name}"] = label_scores.band
                out[f"escalate_now__{label.name}"] = label_scores.escalate_now
            out["likely_type"] = pick_likely_types(self.labels, scored.types)
        return out


def pick_likely_types(labels: list[LabelModel], types: dict[str, LabelScores]) -> np.ndarray:
    """Per row, the escalation type of the typed label with the highest probability (None without one)."""
    typed = [label for label in labels if label.escalation_type is not None]
    if not typed:
        return np.full(len(next(iter(types.values())).probability), None, dtype=object)
    stacked = np.column_stack([types[label.name].probability for label in typed])
    kinds = np.asarray([label.escalation_type for label in typed], dtype=object)
    return kinds[np.argmax(stacked, axis=1)]


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


def check_feature_schema(metadata: dict, builder: FeatureBuilder, models: dict[str, lgb.Booster],
                         model_features: dict[str, list[str]] | None = None) -> None:
    """The builder, the models and the metadata must agree on the feature lists, name by name, in order.

    `model_features`: the list the metadata gives a model (default: the whole feature list)."""
    expected = list(metadata.get("features") or [])
    produced = list(getattr(builder, "feature_names_", []) or [])
    wanted = model_features or {}
    for name, features in (("feature builder", produced), *((n, m.feature_name()) for n, m in models.items())):
        listed = wanted.get(name, expected)
        if list(features) != listed:
            missing = [f for f in listed if f not in features][:5]
            extra = [f for f in features if f not in listed][:5]
            raise BundleError(f"incompatible feature schema: the {name} has {len(features)} features, the "
                              f"metadata lists {len(listed)} (missing {missing}, unexpected {extra})")
    for name, listed in wanted.items():
        outside = [f for f in listed if f not in expected][:5]
        if outside:
            raise BundleError(f"incompatible feature schema: the {name} uses features the bundle does not "
                              f"build: {outside}")


def describe_label_models(metadata: dict) -> list[dict]:
    """The metadata's labels, the primary first; a bundle of one label (no `labels` key) gets one entry."""
    labels = metadata.get("labels")
    if labels:
        return sorted(labels, key=lambda entry: not entry.get("primary"))
    return [{"name": "escalation", "primary": True, "escalation_type": None, "model_file": ESCALATION_MODEL,
             "features": list(metadata.get("features") or []), "calibration": metadata["calibration"],
             "thresholds": metadata["thresholds"], "definition": metadata.get("label", {}).get("definition", "")}]


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
    try:
        metadata = json.loads((bundle_dir / METADATA).read_text())
    except ValueError as exc:
        raise BundleError(f"{METADATA} is not valid JSON: {exc}") from exc
    entries = check_label_entries(metadata)
    # Models are plain text (load_booster refuses anything else); the builder state is JSON and npz.
    models = {"escalation model": load_booster(bundle_dir / ESCALATION_MODEL)}
    if (bundle_dir / PRIORITY_MODEL).exists():  # listed in the verified manifest whenever it was written
        models["priority model"] = load_booster(bundle_dir / PRIORITY_MODEL)
    model_features = {"escalation model": list(entries[0]["features"])}
    for entry in entries[1:]:
        key = f"escalation model of label {entry['name']}"
        models[key] = load_booster(bundle_dir / entry["model_file"])
        model_features[key] = list(entry["features"])
    if metadata.get("priority_features") is not None and "priority model" in models:
        model_features["priority model"] = list(metadata["priority_features"])
    builder = load_builder(bundle_dir)
    if "priority model" not in models and metadata.get("priority_classes"):
        raise BundleError(f"{PRIORITY_MODEL} is missing, yet the metadata lists priority classes "
                          f"{metadata['priority_classes']}")
    check_feature_schema(metadata, builder, models, model_features)
    builder.fit_history(pd.read_parquet(bundle_dir / HISTORY))
    position = {name: i for i, name in enumerate(metadata["features"])}

    def columns_of(features: list[str]) -> np.ndarray | None:
        return None if features == metadata["features"] else np.array([position[f] for f in features])

    labels = [
        LabelModel(name=entry["name"], escalation_type=entry.get("escalation_type"),
                   booster=models["escalation model" if i == 0 else f"escalation model of label {entry['name']}"],
                   features=list(entry["features"]), columns=columns_of(list(entry["features"])),
                   calibration=entry["calibration"], thresholds=entry["thresholds"],
                   definition=entry.get("definition", ""))
        for i, entry in enumerate(entries)
    ]
    return ModelBundle(
        path=bundle_dir,
        metadata=metadata,
        builder=builder,
        escalation_model=models["escalation model"],
        priority_model=models.get("priority model"),
        digest=digest,
        labels=labels,
        priority_columns=columns_of(model_features.get("priority model", metadata["features"])),
    )


def check_label_entries(metadata: dict) -> list[dict]:
    """The metadata's label entries, checked before any file they name is opened: names and types
    are plain identifiers, and each model file is one of this bundle's own model files."""
    entries = describe_label_models(metadata)
    for i, entry in enumerate(entries):
        name = entry.get("name")
        if not isinstance(name, str) or not LABEL_NAME.fullmatch(name):
            raise BundleError(f"{METADATA}: label {i} has an invalid name {name!r}")
        expected = ESCALATION_MODEL if i == 0 else label_model_file(name)
        if entry.get("model_file") != expected:
            raise BundleError(f"{METADATA}: label {name} names model file {entry.get('model_file')!r}, "
                              f"expected {expected!r}")
        kind = entry.get("escalation_type")
        if kind is not None and kind not in ESCALATION_TYPES:
            raise BundleError(f"{METADATA}: label {name} has an unknown escalation_type {kind!r}")
        if not isinstance(entry.get("features"), list) or not entry.get("thresholds") or not entry.get("calibration"):
            raise BundleError(f"{METADATA}: label {name} lacks its features, thresholds or calibration")
    return entries


LABEL_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
