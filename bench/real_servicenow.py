"""Real-data benchmark: the ServiceNow incident audit log, out of time, both label choices.

    python bench/real_servicenow.py [--data PATH] [--labels functional,sla] [--select] [--set LABEL:KEY=VALUE]

Imports the export (leakage audit on, flagged columns left out), trains with the source's
params files (the oldest 70 % of incidents by opening time fit: 68 % train + 2 % for
calibration; the newest 30 % test) and prints, per label, the model beside
two baselines: a rule by assignment group (the group's positive rate on the training
period) and logistic regression on the same features. Metrics at the first update and
ROC-AUC by update number 1..8 (update n = the ticket's state after its n-th logged update).
Default data: ESCALATION_RISK_SERVICENOW_PATH or ../shared/data/servicenow/.

`--select` is how every feature and params choice is made: the test period is dropped
before anything is fitted, and the same training step runs on the oldest 70 % of
incidents alone, whose newest 20 % play the test (its first ~78 % fit, the next sliver
calibrates as in the real run). `--select --fit-share 0.56` validates on an earlier window
(the 20 % of incidents before those), a second opinion on a drifting log. Compare variants
with `--set` (a params key for a label, e.g. `--set sla:escalation_model.num_leaves=31`) or
`--params`; read the test period only once the choice is made.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bundle import evaluate
from features.settings import Settings
from features.sources.mapping import describe_labels, import_export, load_mapping, write_canonical
from training.config import Params, adopt_mapping, load_params
from training.split import SPLIT
from training.train import train_models

PARAMS_DIR = Path(__file__).resolve().parent.parent / "training"
LABELS = {"functional": PARAMS_DIR / "params_servicenow.yaml", "sla": PARAMS_DIR / "params_servicenow_sla.yaml"}
GOALS = {"functional": {"update 1": 0.79}, "sla": {"update 1": 0.82, "update 8": 0.89}}
MAX_UPDATE = 8
FIT_SHARE = 0.70               # the oldest 70 % of incidents fit; the newest 30 % are the test period
SELECT_SHARE = 0.20            # --select: the newest 20 % of the fitting period validate


def keep_fitting_period(events: pd.DataFrame, fit_share: float = FIT_SHARE) -> pd.DataFrame:
    """The log without the test period: incidents ranked by opening time, the oldest `fit_share` kept."""
    created = events.groupby("ticket_id", sort=False)["created_at"].first()
    created = pd.to_datetime(created, errors="coerce", utc=True).sort_values(kind="stable")
    kept = created.index[: int(round(len(created) * fit_share))]
    return events[events["ticket_id"].isin(kept)].reset_index(drop=True)


def select_params(params: Params, fit_share: float = FIT_SHARE) -> Params:
    """The same choices, split for selection: the kept period's newest SELECT_SHARE play the test."""
    valid = params.split.valid / fit_share
    split = {"train": 1 - SELECT_SHARE - valid, "valid": valid, "test": SELECT_SHARE}
    return params.model_copy(update={"split": params.split.model_copy(update=split)})


def override_params(params: Params, settings: list[str]) -> Params:
    """`dotted.key=yaml value` overrides (experiments), validated like the params file itself."""
    data = params.model_dump()
    for setting in settings:
        key, _, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        node[leaf] = yaml.safe_load(value)
    return Params.model_validate(data)


def score_group_rule(snapshots: pd.DataFrame) -> np.ndarray:
    """Baseline: each test snapshot scored by its current group's positive rate in the training period."""
    train = snapshots[snapshots[SPLIT] == "train"]
    rate = train.groupby(train["group"].astype("string"))["escalates"].mean()
    test = snapshots[snapshots[SPLIT] == "test"]
    return test["group"].astype("string").map(rate).astype("float64").fillna(train["escalates"].mean()).to_numpy()


METRICS = (("ROC-AUC", "roc_auc"), ("PR-AUC", "pr_auc"), ("Brier", "brier"), ("ECE", "ece"),
           ("recall@10%", "recall_at_10pct"), ("recall@20%", "recall_at_20pct"))


def measure_scores(y: np.ndarray, score: np.ndarray, position: np.ndarray) -> pd.DataFrame:
    """One scorer (a probability): rows = all updates, then update 1..8; columns = the metrics."""
    score = np.clip(score, 0, 1)
    rows = {"all updates": np.ones(len(y), dtype=bool)}
    rows |= {f"update {n}": position == n - 1 for n in range(1, MAX_UPDATE + 1)}
    table = {}
    for name, at in rows.items():
        values = evaluate.score_binary(y[at], score[at], (0.10, 0.20)) if at.sum() > 50 else {}
        table[name] = {label: values.get(key, np.nan) for label, key in METRICS} | {"base rate": y[at].mean(),
                                                                                   "snapshots": int(at.sum())}
    return pd.DataFrame(table).T


def run_label(name: str, events_path: Path, params: Params) -> tuple[dict[str, pd.DataFrame], dict]:
    started = time.perf_counter()
    result = train_models(events_path, params)
    fit_seconds = time.perf_counter() - started
    scores = result.test_scores
    y = scores["escalates"].to_numpy()
    position = scores["position"].to_numpy()
    started = time.perf_counter()
    rule = score_group_rule(result.snapshots)
    rule_seconds = time.perf_counter() - started
    tables = {
        "LightGBM": measure_scores(y, scores["probability"].to_numpy(), position),
        "logistic": measure_scores(y, scores["logistic_probability"].to_numpy(), position),
        "group rule": measure_scores(y, rule, position),
    }
    info = {
        "fit_seconds": fit_seconds,
        "rule_seconds": rule_seconds,
        "test_snapshots": len(scores),
        "test_tickets": scores["ticket_id"].nunique(),
        "priority_macro_f1": result.metrics.get("test_priority_macro_f1"),
        "typed_priority_macro_f1": result.metrics.get("baseline_typed_priority_macro_f1"),
        "ece_uncalibrated": result.metrics.get("test_ece_uncalibrated"),
        "timings": result.timings,
    }
    return tables, info


def format_tables(tables: dict[str, pd.DataFrame]) -> str:
    """Update 1 for every scorer, then ROC-AUC by update beside the baselines, then LightGBM in full."""
    first = pd.DataFrame({model: t.loc["update 1", [m for m, _ in METRICS]] for model, t in tables.items()}).T
    by_update = pd.DataFrame({f"ROC-AUC {model}": t["ROC-AUC"] for model, t in tables.items()})
    fmt = {"float_format": lambda v: f"{v:.3f}", "na_rep": "-"}
    ours = tables["LightGBM"].assign(snapshots=lambda t: t["snapshots"].astype(int))
    return "\n".join([
        "at update 1 (the first logged state):", first.to_string(**fmt), "",
        "ROC-AUC by update (update n = the state after the n-th logged update):", by_update.to_string(**fmt), "",
        "LightGBM (the served probability: calibrated when the params say so) by update:", ours.to_string(**fmt),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="ServiceNow incident audit log (.csv.gz)")
    parser.add_argument("--labels", default="functional,sla", help="comma-separated: functional, sla")
    parser.add_argument("--params", action="append", default=[], metavar="LABEL=PATH",
                        help="another params file for a label (experiments), e.g. sla=my_params.yaml")
    parser.add_argument("--select", action="store_true",
                        help="selection run: drop the test period, validate on the fitting period's newest 20 %%")
    parser.add_argument("--fit-share", type=float, default=FIT_SHARE,
                        help="with --select: keep this oldest share of incidents (default 0.70; 0.56 validates "
                             "on the 20 %% of incidents just before the default validation weeks)")
    parser.add_argument("--set", action="append", default=[], metavar="LABEL:KEY=VALUE", dest="overrides",
                        help="override one params key for a label, e.g. sla:escalation_model.num_leaves=31")
    args = parser.parse_args()
    data = args.data or Settings().resolved_servicenow_path
    if not data.exists():
        raise SystemExit(f"ServiceNow export not found: {data} (set ESCALATION_RISK_SERVICENOW_PATH or --data)")
    params_paths = dict(LABELS)
    for given in args.params:
        label, _, path = given.partition("=")
        if label not in LABELS or not path:
            raise SystemExit(f"--params {given!r}: expected LABEL=PATH with LABEL one of {', '.join(LABELS)}")
        params_paths[label] = Path(path)
    overrides: dict[str, list[str]] = {label: [] for label in LABELS}
    for given in args.overrides:
        label, _, setting = given.partition(":")
        if label not in LABELS or "=" not in setting:
            raise SystemExit(f"--set {given!r}: expected LABEL:KEY=VALUE with LABEL one of {', '.join(LABELS)}")
        overrides[label].append(setting)

    started = time.perf_counter()
    imported = import_export(data, load_mapping("servicenow"), describe_labels("counter_rise", "reassignment_count", 2))
    import_seconds = time.perf_counter() - started
    print(f"data: {data}\nimport + leakage audit: {import_seconds:.1f} s; {len(imported.events):,} rows; "
          f"left out: {', '.join(imported.excluded)}\n")
    events = imported.events
    period = "out-of-time test: newest 30 % of incidents"
    if args.select:
        if not 0.2 <= args.fit_share <= FIT_SHARE:
            raise SystemExit(f"--fit-share {args.fit_share}: expected 0.2 to {FIT_SHARE} (the test period stays out)")
        events = keep_fitting_period(events, args.fit_share)
        period = (f"SELECTION run, test period dropped; validation = newest {SELECT_SHARE:.0%} of the oldest "
                  f"{args.fit_share:.0%} of incidents")
    with tempfile.TemporaryDirectory() as tmp:
        events_path = write_canonical(events, Path(tmp) / "servicenow_events.parquet")
        for name in [n.strip() for n in args.labels.split(",") if n.strip()]:
            params = override_params(adopt_mapping(load_params(params_paths[name]), imported.mapping.closing_statuses,
                                                   imported.feature_extras), overrides[name])
            if args.select:
                params = select_params(params, args.fit_share)
            tables, info = run_label(name, events_path, params)
            changed = f"; overrides: {', '.join(overrides[name])}" if overrides[name] else ""
            print(f"== label: {name} ({params_paths[name].name}{changed}); {period}, "
                  f"{info['test_tickets']:,} incidents, {info['test_snapshots']:,} snapshots")
            print(format_tables(tables))
            ours = tables["LightGBM"]
            checks = [f"{k} ROC-AUC {ours.loc[k, 'ROC-AUC']:.3f} (goal >= {g})" for k, g in GOALS[name].items()]
            checks.append(f"ECE {ours.loc['all updates', 'ECE']:.3f} (goal <= 0.05; uncalibrated "
                          f"{info['ece_uncalibrated']:.3f})")
            print("goals: " + "; ".join(checks))
            print(f"priority target (time to resolve) macro-F1 {info['priority_macro_f1']:.3f} vs typed priority "
                  f"{info['typed_priority_macro_f1']:.3f}")
            timings = info["timings"]
            print(f"fit time: whole training step {info['fit_seconds']:.1f} s (" + ", ".join(
                f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in timings.items()) + "); LightGBM fit "
                f"{timings.get('escalation_fit_seconds', float('nan')):.1f} s, logistic fit+score "
                f"{timings.get('baseline_fit_seconds', float('nan')):.1f} s, group rule {info['rule_seconds']:.2f} s "
                "(shared machine: timings are noisy)\n")


if __name__ == "__main__":
    main()
