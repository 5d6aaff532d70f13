"""Real-data benchmark: the ServiceNow incident audit log, out of time, both label choices.

    python bench/real_servicenow.py [--data PATH] [--labels functional,sla]

Imports the export (leakage audit on, flagged columns left out), trains with the source's
params files (the oldest 70 % of incidents by opening time fit: 65 % train + 5 % for
calibration; the newest 30 % test) and prints, per label, the model beside
two baselines: a rule by assignment group (the group's positive rate on the training
period) and logistic regression on the same features. Metrics at the first update and
ROC-AUC by update number 1..8 (update n = the ticket's state after its n-th logged update).
Default data: ESCALATION_RISK_SERVICENOW_PATH or ../shared/data/servicenow/.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.settings import Settings
from features.sources.mapping import describe_labels, import_export, load_mapping, write_canonical
from training import evaluate
from training.config import load_params
from training.split import SPLIT
from training.train import train_models

PARAMS_DIR = Path(__file__).resolve().parent.parent / "training"
LABELS = {"functional": PARAMS_DIR / "params_servicenow.yaml", "sla": PARAMS_DIR / "params_servicenow_sla.yaml"}
GOALS = {"functional": {"update 1": 0.79}, "sla": {"update 1": 0.82, "update 8": 0.89}}
MAX_UPDATE = 8


def score_group_rule(snapshots: pd.DataFrame) -> np.ndarray:
    """Baseline: each test snapshot scored by its current group's positive rate in the training period."""
    train = snapshots[snapshots[SPLIT] == "train"]
    rate = train.groupby(train["group"].astype("string"))["escalates"].mean()
    test = snapshots[snapshots[SPLIT] == "test"]
    return test["group"].astype("string").map(rate).astype("float64").fillna(train["escalates"].mean()).to_numpy()


def measure_scores(y: np.ndarray, score: np.ndarray, position: np.ndarray) -> dict[str, float]:
    """The benchmark's rows for one scorer (a probability): first-update metrics, ROC-AUC by update number."""
    first = position == 0
    at_first = evaluate.score_binary(y[first], np.clip(score[first], 0, 1), (0.10, 0.20))
    out = {"ROC-AUC (all updates)": evaluate.score_binary(y, np.clip(score, 0, 1), ())["roc_auc"]}
    out |= {f"update 1: {name}": at_first[key] for name, key in (
        ("ROC-AUC", "roc_auc"), ("PR-AUC", "pr_auc"), ("Brier", "brier"), ("ECE", "ece"),
        ("recall @ top 10%", "recall_at_10pct"), ("recall @ top 20%", "recall_at_20pct"))}
    out["ECE (all updates)"] = evaluate.expected_calibration_error(y, np.clip(score, 0, 1))
    for n in range(2, MAX_UPDATE + 1):
        at = position == n - 1
        out[f"update {n}: ROC-AUC"] = evaluate.score_ranking(y[at], score[at], ())["roc_auc"] if at.sum() > 50 else np.nan
    return out


def run_label(name: str, events_path: Path) -> tuple[pd.DataFrame, dict]:
    params = load_params(LABELS[name])
    started = time.perf_counter()
    result = train_models(events_path, params)
    fit_seconds = time.perf_counter() - started
    scores = result.test_scores
    y = scores["escalates"].to_numpy()
    position = scores["position"].to_numpy()
    columns = {
        "LightGBM": measure_scores(y, scores["probability"].to_numpy(), position),
        "logistic": measure_scores(y, scores["logistic_probability"].to_numpy(), position),
        "group rule": measure_scores(y, score_group_rule(result.snapshots), position),
    }
    table = pd.DataFrame(columns)
    info = {
        "fit_seconds": fit_seconds,
        "test_snapshots": len(scores),
        "test_tickets": scores["ticket_id"].nunique(),
        "base_rate_update_1": float(y[position == 0].mean()),
        "snapshots_by_update": {n: int((position == n - 1).sum()) for n in (1, 8)},
        "priority_macro_f1": result.metrics.get("test_priority_macro_f1"),
        "typed_priority_macro_f1": result.metrics.get("baseline_typed_priority_macro_f1"),
        "timings": result.timings,
    }
    return table, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="ServiceNow incident audit log (.csv.gz)")
    parser.add_argument("--labels", default="functional,sla", help="comma-separated: functional, sla")
    args = parser.parse_args()
    data = args.data or Settings().resolved_servicenow_path
    if not data.exists():
        raise SystemExit(f"ServiceNow export not found: {data} (set ESCALATION_RISK_SERVICENOW_PATH or --data)")

    started = time.perf_counter()
    imported = import_export(data, load_mapping("servicenow"), describe_labels("counter_rise", "reassignment_count", 2))
    import_seconds = time.perf_counter() - started
    print(f"data: {data}\nimport + leakage audit: {import_seconds:.1f} s; {len(imported.events):,} rows; "
          f"left out: {', '.join(imported.excluded)}\n")
    with tempfile.TemporaryDirectory() as tmp:
        events_path = write_canonical(imported.events, Path(tmp) / "servicenow_events.parquet")
        for name in [n.strip() for n in args.labels.split(",") if n.strip()]:
            table, info = run_label(name, events_path)
            print(f"== label: {name} ({LABELS[name].name}); out-of-time test: newest 30 % of incidents, "
                  f"{info['test_tickets']:,} incidents, {info['test_snapshots']:,} snapshots; base rate at "
                  f"update 1 {info['base_rate_update_1']:.3f}")
            print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
            goals = GOALS[name]
            checks = [f"{k} ROC-AUC {table.loc[f'{k}: ROC-AUC', 'LightGBM']:.3f} (goal >= {g})" for k, g in goals.items()]
            ece = table.loc["ECE (all updates)", "LightGBM"]
            checks.append(f"ECE {ece:.3f} (goal <= 0.05)")
            print("goals: " + "; ".join(checks))
            print(f"priority target (time to resolve) macro-F1 {info['priority_macro_f1']:.3f} vs typed priority "
                  f"{info['typed_priority_macro_f1']:.3f}")
            print(f"fit time {info['fit_seconds']:.1f} s (" + ", ".join(
                f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in info["timings"].items()) + ")\n")


if __name__ == "__main__":
    main()
