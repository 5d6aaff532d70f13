"""Write the self-contained model bundle the service loads, and point models/current at it."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bundle.case_mix import CASE_MIX_DATA, CASE_MIX_MODEL
from bundle.health import REFERENCE
from bundle.model import (
    BUILDER_ARRAYS,
    BUILDER_STATE,
    ESCALATION_MODEL,
    HISTORY,
    METADATA,
    PRIORITY_MODEL,
    label_model_file,
    write_manifest,
)
from bundle.report import IMPORTANCE, label_file, write_label_report_data, write_report_data
from training.config import LabelParams, flatten_params
from training.train import LabelResult, TrainingResult

CURRENT = "current"


def make_version(result: TrainingResult, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{result.data_fingerprint[:8]}"


def describe_window(result: TrainingResult) -> dict:
    table = result.split_table
    return {
        part: {
            "tickets": int(row.tickets),
            "snapshots": int(row.snapshots),
            "positive_rate": float(row.positive_rate),
            "created_from": row.created_from.isoformat(),
            "created_to": row.created_to.isoformat(),
        }
        for part, row in table.iterrows()
    }


def describe_label(label: LabelParams) -> str:
    """A label's rule in words, for the metadata and the report."""
    horizon = "" if label.horizon_hours is None else f", within {label.horizon_hours:g} hours"
    if label.rule == "counter_rise":
        return f"{label.counter} rises at least {label.min_rise} more times after the snapshot{horizon}"
    if label.rule == "sla_missed":
        return f"the SLA due time passes while the ticket is open, after the snapshot{horizon}"
    typed = f" and that first escalation is {label.rise_type}" if label.rise_type else ""
    return f"escalation_level rises after the snapshot time{horizon}{typed}"


def describe_label_model(label: LabelResult, primary: bool) -> dict:
    """One label's entry in the metadata: definition, model file, features, calibration and bands."""
    spec = label.label
    return {
        "name": spec.name,
        "primary": primary,
        "escalation_type": label.escalation_type,
        "rule": spec.rule,
        "horizon_hours": spec.horizon_hours,
        **({"counter": spec.counter, "min_rise": spec.min_rise} if spec.rule == "counter_rise" else {}),
        **({"rise_type": spec.rise_type} if spec.rise_type else {}),
        "definition": describe_label(spec),
        "model_file": ESCALATION_MODEL if primary else label_model_file(spec.name),
        "features": label.features,
        "calibration": label.calibration,
        "thresholds": label.thresholds,
    }


def write_bundle(result: TrainingResult, models_dir: Path, version: str) -> Path:
    """Write models_dir/<version>/ atomically (temp folder, then rename) with its manifest."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final_dir = models_dir / version
    tmp_dir = models_dir / f".{version}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    result.escalation_model.booster_.save_model(str(tmp_dir / ESCALATION_MODEL),
                                                num_iteration=result.escalation_model.best_iteration_ or None)
    if result.priority_model is not None:  # an export without a priority target has none
        result.priority_model.booster_.save_model(str(tmp_dir / PRIORITY_MODEL),
                                                  num_iteration=result.priority_model.best_iteration_ or None)
    # The other labels' models: LightGBM text too, each with its report data and importance.
    for label in result.labels[1:]:
        label.model.booster_.save_model(str(tmp_dir / label_model_file(label.name)),
                                        num_iteration=label.model.best_iteration_ or None)
        label.importance.to_csv(tmp_dir / label_file(IMPORTANCE, label.name), index=False)
        write_label_report_data(label, tmp_dir)
    # The builder's learned state as data (JSON + float64 arrays), never a pickle; the history
    # indexes (the any-rise one and each label's) are rebuilt at load from the history table,
    # with each label's outcome columns, which can be inspected and refreshed.
    values, arrays = result.builder.state()
    (tmp_dir / BUILDER_STATE).write_text(json.dumps(values))
    with open(tmp_dir / BUILDER_ARRAYS, "wb") as handle:
        np.savez(handle, **arrays)
    result.tickets.to_parquet(tmp_dir / HISTORY, index=False)
    result.importance.to_csv(tmp_dir / IMPORTANCE, index=False)
    write_report_data(result, tmp_dir)
    case_mix = result.case_mix
    if case_mix is not None:
        case_mix.model.booster_.save_model(str(tmp_dir / CASE_MIX_MODEL),
                                           num_iteration=case_mix.model.best_iteration_ or None)
        case_mix.tickets.to_parquet(tmp_dir / CASE_MIX_DATA, index=False)
    if result.reference is not None:
        (tmp_dir / REFERENCE).write_text(json.dumps(result.reference, default=float))
    metadata: dict = {
        "name": "escalation-risk",
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "data_fingerprint": result.data_fingerprint,
        "data_window": describe_window(result),
        "history_as_of": result.tickets["created_at"].max().isoformat(),
        "metrics": {k: (None if v != v else v) for k, v in result.metrics.items()},
        "thresholds": result.thresholds,
        "calibration": result.calibration,
        "priority_classes": result.priority_classes,
        "features": result.builder.feature_names_,
        "categorical_features": result.builder.categorical_features_,
        "params": flatten_params(result.params),
        "case_mix": None if case_mix is None else {
            "model": CASE_MIX_MODEL, "features": case_mix.features, "calibration": case_mix.calibration,
            "definition": "expected escalation of a ticket as it arrived (creation snapshot), from the "
                          "ticket and its customer, without the agent's or team's features",
        },
        "label": {
            "rule": result.params.label.rule,
            "horizon_hours": result.params.label.horizon_hours,
            "definition": describe_label(result.params.label),
        },
        # Every label's model, the primary first (bundle.model reads these; a bundle without
        # the key has one label, described above).
        "labels": [describe_label_model(label, i == 0) for i, label in enumerate(result.labels)],
        "skipped_labels": result.skipped_labels,
    }
    if result.priority_features is not None:
        metadata["priority_features"] = result.priority_features
    (tmp_dir / METADATA).write_text(json.dumps(metadata, indent=2, default=str))
    write_manifest(tmp_dir)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    return final_dir


def point_current(models_dir: Path, bundle_dir: Path) -> Path:
    """Swap models/current to the bundle in one rename, so a reader never sees it half-written."""
    link = Path(models_dir) / CURRENT
    tmp = Path(models_dir) / f".{CURRENT}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path(bundle_dir).name)
    os.replace(tmp, link)
    return link
