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
    write_manifest,
)
from bundle.report import write_report_data
from training.config import flatten_params
from training.train import TrainingResult

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
    # The builder's learned state as data (JSON + float64 arrays), never a pickle; the history
    # index is rebuilt at load from the history table, which can be inspected and refreshed.
    values, arrays = result.builder.state()
    (tmp_dir / BUILDER_STATE).write_text(json.dumps(values))
    with open(tmp_dir / BUILDER_ARRAYS, "wb") as handle:
        np.savez(handle, **arrays)
    result.tickets.to_parquet(tmp_dir / HISTORY, index=False)
    result.importance.to_csv(tmp_dir / "feature_importance.csv", index=False)
    write_report_data(result, tmp_dir)
    case_mix = result.case_mix
    if case_mix is not None:
        case_mix.model.booster_.save_model(str(tmp_dir / CASE_MIX_MODEL),
                                           num_iteration=case_mix.model.best_iteration_ or None)
        case_mix.tickets.to_parquet(tmp_dir / CASE_MIX_DATA, index=False)
    if result.reference is not None:
        (tmp_dir / REFERENCE).write_text(json.dumps(result.reference, default=float))
    metadata = {
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
            "definition": "escalation_level rises after the snapshot time, within the horizon",
        },
    }
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
