"""MLflow: one run per training, the bundle logged as a pyfunc, registered with a quality gate.

The new version always gets alias `challenger`; it takes `champion` only when it scores at
least as well as the current champion on the SAME test rows (the champion is loaded and
re-scored here), and the run records why or why not.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from sklearn.metrics import roc_auc_score

import bundle
import features
from bundle.pyfunc import EscalationRiskModel
from features.history import count_tickets
from features.schema import CANONICAL_COLUMNS, COUNTER_COLUMNS, LEVEL_COLUMN, REQUIRED_COLUMNS
from features.settings import Settings
from training.config import flatten_params
from training.train import TrainingResult, find_quality_problem

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
PIP_REQUIREMENTS = [
    "lightgbm==4.7.0",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    "pydantic==2.14.3",  # the feature builder state is validated on load (features.build)
    "pyarrow==25.0.1",
    "vaderSentiment==3.3.2",
    "mlflow==3.17.2",
]


@dataclass
class Registration:
    run_id: str
    model_version: str
    champion: bool
    reason: str
    tracking_uri: str


def make_input_example(result: TrainingResult, n: int = 3) -> pd.DataFrame:
    """A few test-period rows as a ticketing system would send them."""
    return to_wire_format(result.snapshots.loc[result.snapshots["split"] == "test", list(CANONICAL_COLUMNS)].head(n))


def to_wire_format(rows: pd.DataFrame) -> pd.DataFrame:
    """Canonical rows as JSON clients send them: ISO time strings, numbers as doubles, plain objects."""
    rows = rows.reset_index(drop=True).copy()
    for column in ("event_time", "created_at", "sla_due_at"):
        rows[column] = rows[column].map(lambda t: t.isoformat() if pd.notna(t) else None)
    # Counters as doubles: a client that leaves one out (NaN) must not fail schema enforcement.
    rows = rows.astype({c: "float64" for c in (*COUNTER_COLUMNS, LEVEL_COLUMN)})
    plain = [c for c in rows.columns if rows[c].dtype.name.startswith(("string", "str", "category"))]
    return rows.astype({c: "object" for c in plain}).replace({np.nan: None})


def make_input_schema() -> Schema:
    """Canonical columns by name; only the ids and times are required.

    Every column is MLflow's `any` type, so the pyfunc takes what pandas gives as it is: integer
    ticket ids and counters from `pd.read_csv`, datetime64 or ISO-string times, the project's
    own events Parquet (MLflow's `string`/`double` enforcement refuses int64 and datetime64
    with "Can not safely convert"). The model validates the values itself (features.schema
    .validate_events), the same way for in-process and `mlflow models serve` calls.
    """
    return Schema([ColSpec(AnyType(), c, required=c in REQUIRED_COLUMNS) for c in CANONICAL_COLUMNS])


def ensure_experiment(settings: Settings) -> str:
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        location = None if settings.mlflow_tracking_uri else settings.artifact_location
        return mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location)
    return experiment.experiment_id


def describe_target(result: TrainingResult, data_source: str) -> str:
    """What a model predicts and for which system: two models are only compared when this matches.

    The primary label's definition: a bundle with more labels is compared on its primary one."""
    return json.dumps({"source": data_source, "label": result.params.label.describe_target()}, sort_keys=True)


def find_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def score_champion(champion, name: str, result: TrainingResult) -> tuple[str, float]:
    """The champion's version and its ROC-AUC on this run's test rows."""
    model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    snapshots = result.snapshots
    test = snapshots.loc[(snapshots["split"] == "test") & (snapshots["escalates"] >= 0)]  # the primary label's rows
    scored = model.predict(to_wire_format(test[list(CANONICAL_COLUMNS)]))
    y = test["escalates"].to_numpy()
    return champion.version, float(roc_auc_score(y, scored["escalation_probability"].to_numpy()))


def log_and_register(result: TrainingResult, bundle_dir: Path, settings: Settings, params_path: Path,
                     events_path: Path, report_dir: Path | None = None, data_source: str = "events") -> Registration:
    experiment_id = ensure_experiment(settings)
    client = MlflowClient(settings.resolved_tracking_uri)
    name = settings.registered_model_name
    with mlflow.start_run(experiment_id=experiment_id, run_name=bundle_dir.name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten_params(result.params).items()})
        mlflow.log_params(
            {
                "data.path": str(events_path),
                "data.fingerprint": result.data_fingerprint,
                "data.rows": result.validation.n_input_rows,
                "data.tickets": count_tickets(result.tickets),
                "bundle.version": bundle_dir.name,
            }
        )
        target = describe_target(result, data_source)
        mlflow.set_tags({"data_fingerprint": result.data_fingerprint, "bundle_version": bundle_dir.name,
                         "target": target})
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if v == v})
        mlflow.log_metrics({f"time_{k}": v for k, v in result.timings.items()})
        mlflow.log_artifact(str(params_path), artifact_path="config")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            result.importance.to_csv(tmp / "feature_importance.csv", index=False)
            result.confusion.to_csv(tmp / "priority_confusion_matrix.csv")
            result.split_table.to_csv(tmp / "data_window.csv")
            summary = (
                result.validation.rejects.groupby(["column", "reason"]).size().rename("rows").reset_index()
                if len(result.validation.rejects)
                else pd.DataFrame(columns=["column", "reason", "rows"])
            )
            summary.to_csv(tmp / "rejects_summary.csv", index=False)
            (tmp / "thresholds.json").write_text(json.dumps(result.thresholds, indent=2))
            for label in result.labels[1:]:
                label.importance.to_csv(tmp / f"feature_importance.{label.name}.csv", index=False)
            for path in tmp.iterdir():
                mlflow.log_artifact(str(path), artifact_path="evaluation")
        if report_dir is not None:
            mlflow.log_artifacts(str(report_dir), artifact_path="report")

        example = make_input_example(result)
        python_model = EscalationRiskModel()
        python_model.load_context(type("Ctx", (), {"artifacts": {"bundle": str(bundle_dir)}})())
        output = python_model.predict(None, example)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(bundle.__file__).parent / "mlflow_model.py"),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(Path(features.__file__).parent), str(Path(bundle.__file__).parent)],
            signature=ModelSignature(inputs=make_input_schema(), outputs=infer_signature(example, output).outputs),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=name,
        )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        client.set_model_version_tag(name, version, "target", target)
        champion = find_champion(client, name)
        champion_target = champion.tags.get("target") if champion is not None else None
        comparable = champion is not None and champion_target in (None, target) and find_quality_problem(result) is None
        previous = score_champion(champion, name, result) if comparable else None
        ours = result.metrics["test_roc_auc"]
        gain = result.params.registry.min_auc_gain
        below_floor = find_quality_problem(result)
        if below_floor is not None:
            promote, reason = False, f"below the quality floor: {below_floor}"
        elif champion_target not in (None, target):
            promote = False
            reason = (f"champion v{champion.version} predicts another label or data source ({champion_target}); "
                      f"not compared. Register this one under its own name "
                      f"(ESCALATION_RISK_REGISTERED_MODEL_NAME)")
        elif previous is None:
            promote, reason = True, "no champion yet"
        else:
            champ_version, champ_auc = previous
            mlflow.log_metric("champion_test_roc_auc", champ_auc)
            promote = bool(ours >= champ_auc + gain)
            verdict = "at least as good as" if promote else "worse than"
            reason = (
                f"challenger v{version} test ROC-AUC {ours:.4f} is {verdict} champion v{champ_version} "
                f"({champ_auc:.4f}) + min gain {gain} on the same test rows"
            )
        if promote:
            client.set_registered_model_alias(name, CHAMPION, version)
        mlflow.set_tags({"promoted_to_champion": str(promote), "promotion_reason": reason})
        client.set_model_version_tag(name, version, "promotion_reason", reason)
        client.set_model_version_tag(name, version, "bundle_version", bundle_dir.name)
    return Registration(run.info.run_id, version, promote, reason, settings.resolved_tracking_uri)
