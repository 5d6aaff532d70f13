"""Real-data benchmark: the ServiceNow incident audit log, out of time, both labels.

    python bench/real_servicenow.py [--data PATH] [--labels functional,sla] [--mode both|together|separate]
                                    [--select] [--set LABEL:KEY=VALUE]

Imports the export (leakage audit on, flagged columns left out), trains with the source's
params file, training/params_servicenow.yaml (the oldest 70 % of incidents by opening time
fit: 68 % train + 2 % for calibration; the newest 30 % test): `together`, both labels in one
run and one bundle; `separate`, each label trained alone with the same settings (what one
params file per label gave before labels were a list); `both` (default) runs the two and
compares them label by label. For each run it prints, per label, the model beside
two baselines: a rule by assignment group (the group's positive rate on the training
period) and logistic regression on the same features. Metrics at the first update and
ROC-AUC by update number 1..8 (update n = the ticket's state after its n-th logged update).
Default data: ESCALATION_RISK_SERVICENOW_PATH or ../shared/data/servicenow/.

`--select` is how every feature and params choice is made: the test period is dropped
before anything is fitted, and the same training step runs on the oldest 70 % of
incidents alone, whose newest 20 % play the test (its first ~78 % fit, the next sliver
calibrates as in the real run). `--select --fit-share 0.56` validates on an earlier window
(the 20 % of incidents before those), a second opinion on a drifting log. Compare variants
with `--set` (a params key for a label, e.g. `--set sla:escalation_model.num_leaves=31`; in the
together run a label's `escalation_model.*` keys change that label's model; `all:KEY=VALUE`
changes every run, e.g. `--set all:num_threads=1`) or `--params`; read the test period only once
the choice is made.
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
from features.labels import label_column
from features.settings import Settings
from features.sources.mapping import describe_labels, import_export, load_mapping, write_canonical
from training.config import Params, adopt_mapping, load_params
from training.split import SPLIT
from training.train import LabelResult, TrainingResult, train_models

PARAMS_DIR = Path(__file__).resolve().parent.parent / "training"
PARAMS = PARAMS_DIR / "params_servicenow.yaml"   # both labels; each trained alone with select_label
LABELS = ("functional", "sla")
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
    data = params.model_dump(exclude={"label"} if params.labels else None)
    for setting in settings:
        key, _, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        node[leaf] = yaml.safe_load(value)
    return Params.model_validate(data)


def override_label_models(params: Params, overrides: dict[str, list[str]]) -> Params:
    """The together run: each label's `escalation_model.KEY=VALUE` overrides into that label's model;
    a label's top-level `KEY=VALUE` (num_threads, seed) applies to the whole run."""
    data = params.model_dump(exclude={"label"})
    for label in data["labels"]:
        for setting in overrides.get(label["name"], []):
            key, _, value = setting.partition("=")
            if "." not in key:
                data[key] = yaml.safe_load(value)
            elif key.startswith("escalation_model.") and key.count(".") == 1:
                label["escalation_model"] = label["escalation_model"] | {key.split(".")[1]: yaml.safe_load(value)}
            else:
                raise SystemExit(f"--set {label['name']}:{setting}: in the together run a label's overrides are "
                                 "escalation_model.KEY or a top-level KEY (use all:KEY=VALUE for the rest)")
    return Params.model_validate(data)


def score_group_rule(snapshots: pd.DataFrame, column: str = "escalates") -> np.ndarray:
    """Baseline: each test snapshot the label asks about scored by its current group's positive rate
    in the training period."""
    asked = snapshots[snapshots[column] >= 0]
    train = asked[asked[SPLIT] == "train"]
    rate = train.groupby(train["group"].astype("string"))[column].mean()
    test = asked[asked[SPLIT] == "test"]
    return test["group"].astype("string").map(rate).astype("float64").fillna(train[column].mean()).to_numpy()


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


def measure_label(result: TrainingResult, label: LabelResult) -> dict[str, pd.DataFrame]:
    """One label's model, logistic baseline and group rule on its test rows, by update."""
    scores = label.test_scores
    y = scores["escalates"].to_numpy()
    position = scores["position"].to_numpy()
    column = label_column(label.name) if label_column(label.name) in result.snapshots else "escalates"
    return {
        "LightGBM": measure_scores(y, scores["probability"].to_numpy(), position),
        "logistic": measure_scores(y, scores["logistic_probability"].to_numpy(), position),
        "group rule": measure_scores(y, score_group_rule(result.snapshots, column), position),
    }


def run(events_path: Path, params: Params) -> tuple[TrainingResult, dict[str, dict[str, pd.DataFrame]], float]:
    """One training run; per label, its tables; the run's wall seconds."""
    started = time.perf_counter()
    result = train_models(events_path, params)
    seconds = time.perf_counter() - started
    return result, {label.name: measure_label(result, label) for label in result.labels}, seconds


def print_label(name: str, tables: dict[str, pd.DataFrame], result: TrainingResult, label: LabelResult,
                header: str) -> None:
    scores = label.test_scores
    print(f"== label: {name} ({header}); {scores['ticket_id'].nunique():,} incidents, {len(scores):,} snapshots")
    print(format_tables(tables))
    ours = tables["LightGBM"]
    checks = [f"{k} ROC-AUC {ours.loc[k, 'ROC-AUC']:.3f} (goal >= {g})" for k, g in GOALS[name].items()]
    checks.append(f"ECE {ours.loc['all updates', 'ECE']:.3f} (goal <= 0.05; uncalibrated "
                  f"{label.metrics['test_ece_uncalibrated']:.3f})")
    print("goals: " + "; ".join(checks))


def print_timings(result: TrainingResult, seconds: float) -> None:
    if "test_priority_macro_f1" in result.metrics:
        print(f"priority target (time to resolve) macro-F1 {result.metrics['test_priority_macro_f1']:.3f} vs typed "
              f"priority {result.metrics['baseline_typed_priority_macro_f1']:.3f}")
    print(f"fit time: whole training step {seconds:.1f} s (" + ", ".join(
        f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in result.timings.items()) + ") (shared machine: timings "
        "are noisy)\n")


def compare(together: dict[str, dict[str, pd.DataFrame]], alone: dict[str, dict[str, pd.DataFrame]]) -> str:
    """Per label: ROC-AUC and ECE of the one-bundle run beside the label trained alone, same test rows."""
    rows = []
    for name in together:
        if name not in alone:
            continue
        a, b = together[name]["LightGBM"], alone[name]["LightGBM"]
        for at in ("all updates", "update 1", "update 8"):
            rows.append({"label": name, "snapshots": at, "ROC-AUC together": a.loc[at, "ROC-AUC"],
                         "ROC-AUC alone": b.loc[at, "ROC-AUC"], "difference": a.loc[at, "ROC-AUC"] - b.loc[at, "ROC-AUC"],
                         "ECE together": a.loc[at, "ECE"], "ECE alone": b.loc[at, "ECE"],
                         "test rows": f"{int(a.loc[at, 'snapshots'])} / {int(b.loc[at, 'snapshots'])}"})
    table = pd.DataFrame(rows)
    worst = table["difference"].min() if len(table) else float("nan")
    return (table.to_string(index=False, float_format=lambda v: f"{v:.4f}") +
            f"\nworst difference {worst:+.4f} (goal: each label within 0.005 ROC-AUC of alone)")


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
    parser.add_argument("--mode", choices=("both", "together", "separate"), default="both",
                        help="together: both labels in one run; separate: each alone; both (default): the two, compared")
    parser.add_argument("--params", action="append", default=[], metavar="LABEL=PATH",
                        help="another params file for a label alone (experiments), e.g. sla=my_params.yaml, or "
                             "for the together run: both=my_params.yaml")
    parser.add_argument("--select", action="store_true",
                        help="selection run: drop the test period, validate on the fitting period's newest 20 %%")
    parser.add_argument("--fit-share", type=float, default=FIT_SHARE,
                        help="with --select: keep this oldest share of incidents (default 0.70; 0.56 validates "
                             "on the 20 %% of incidents just before the default validation weeks)")
    parser.add_argument("--set", action="append", default=[], metavar="LABEL:KEY=VALUE", dest="overrides",
                        help="override one params key for a label, e.g. sla:escalation_model.num_leaves=31, or for "
                             "every run: all:num_threads=1")
    args = parser.parse_args()
    data = args.data or Settings().resolved_servicenow_path
    if not data.exists():
        raise SystemExit(f"ServiceNow export not found: {data} (set ESCALATION_RISK_SERVICENOW_PATH or --data)")
    names = [n.strip() for n in args.labels.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LABELS))
    if unknown:
        raise SystemExit(f"--labels: unknown {', '.join(unknown)}; expected {', '.join(LABELS)}")
    params_paths: dict[str, Path] = {}
    for given in args.params:
        label, _, path = given.partition("=")
        if label not in (*LABELS, "both") or not path:
            raise SystemExit(f"--params {given!r}: expected LABEL=PATH with LABEL one of both, {', '.join(LABELS)}")
        params_paths[label] = Path(path)
    overrides: dict[str, list[str]] = {label: [] for label in (*LABELS, "all")}
    for given in args.overrides:
        label, _, setting = given.partition(":")
        if label not in overrides or "=" not in setting:
            raise SystemExit(f"--set {given!r}: expected LABEL:KEY=VALUE with LABEL one of all, {', '.join(LABELS)}")
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

    def prepare(params: Params, label_overrides: list[str]) -> Params:
        params = adopt_mapping(params, imported.mapping.closing_statuses, imported.feature_extras)
        params = override_params(params, overrides["all"] + label_overrides)
        return select_params(params, args.fit_share) if args.select else params

    together: dict[str, dict[str, pd.DataFrame]] = {}
    alone: dict[str, dict[str, pd.DataFrame]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        events_path = write_canonical(events, Path(tmp) / "servicenow_events.parquet")
        if args.mode in ("together", "both"):
            both = load_params(params_paths.get("both", PARAMS))
            both = override_label_models(both, {n: overrides[n] for n in LABELS})
            both = prepare(both, [])
            chosen = [label for label in both.list_labels() if label.name in names]
            if [label.name for label in chosen] != [label.name for label in both.list_labels()]:
                both = Params.model_validate(both.model_dump(exclude={"label"}) | {
                    "labels": [label.model_dump() for label in chosen], "primary_label": chosen[0].name})
            result, tables, seconds = run(events_path, both)
            print(f"######## together: {', '.join(lb.name for lb in result.labels)} in one run and one bundle "
                  f"({params_paths.get('both', PARAMS).name}); {period}\n")
            for label in result.labels:
                together[label.name] = tables[label.name]
                changed = f"; overrides: {', '.join(overrides[label.name])}" if overrides[label.name] else ""
                print_label(label.name, tables[label.name], result, label, f"together{changed}")
                print()
            print_timings(result, seconds)
        if args.mode in ("separate", "both"):
            print(f"######## separate: each label trained alone with the same settings; {period}\n")
            for name in names:
                params = load_params(params_paths[name]) if name in params_paths else load_params(PARAMS).select_label(name)
                result, tables, seconds = run(events_path, prepare(params, overrides[name]))
                alone[name] = tables[result.labels[0].name]
                source = params_paths[name].name if name in params_paths else f"{PARAMS.name}, label {name} alone"
                changed = f"; overrides: {', '.join(overrides[name])}" if overrides[name] else ""
                print_label(name, alone[name], result, result.labels[0], source + changed)
                print_timings(result, seconds)
    if together and alone:
        print("######## one bundle against each label alone (LightGBM, same test rows):")
        print(compare(together, alone))


if __name__ == "__main__":
    main()
