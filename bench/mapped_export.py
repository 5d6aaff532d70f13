"""An export the project has never seen, from a mapping file and default params, beside an independent baseline.

    python bench/mapped_export.py [--data EXPORT --mapping FILE] [--tickets N] [--select] [--set KEY=VALUE]

Without --data, the demo simulator writes a service-desk export (text levels L1/L2/L3, no
priority, no opening time, ISO times with offsets, reopenings, ~700 products, ~600 teams)
and `init-mapping` drafts its mapping, used as drafted. The pipeline (import with the
leakage audit, default params) is trained once; the independent baseline is a plain
LightGBM on each ticket's FIRST row of the raw export (every column but the id, the times
and the level, categoricals as LightGBM categories, default LightGBM settings with early
stopping), fitted on the same time split (tickets by their first update: oldest 70 % train,
next 15 % validation, newest 15 % test) with its own label (the level rises later). Both are
scored on the pipeline's first-event test snapshots with the pipeline's labels.

`--select` drops the test period before anything is fitted: the oldest 85 % are split again
(the newest 15 % of them play the test), which is where params choices are made.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import lightgbm as lgb
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.real_servicenow import override_params  # noqa: E402
from features.sources.draft import draft_mapping, read_for_profile  # noqa: E402
from features.sources.mapping import ReadSpec, import_export, load_mapping, write_canonical  # noqa: E402
from features.synthetic import simulate_export  # noqa: E402
from training.config import adopt_mapping, load_params  # noqa: E402
from training.split import SPLIT  # noqa: E402
from training.train import train_models  # noqa: E402

PARAMS = Path(__file__).resolve().parent.parent / "training" / "params.yaml"
TRAIN, VALID = 0.70, 0.15


def first_rows(raw: pd.DataFrame, mapping) -> pd.DataFrame:
    """Each ticket's first update of the raw export, with its label (the level rises later) and features."""
    ticket, event = mapping.columns["ticket_id"], mapping.columns["event_time"]
    frame = raw.copy()
    frame["_t"] = pd.to_datetime(frame[event], utc=True, errors="coerce", format="mixed")
    frame = frame.sort_values([ticket, "_t"], kind="stable")
    numbers = mapping.escalation.level_numbers()
    level_raw = frame[mapping.escalation.column].astype("string").str.strip().str.lower()
    level = level_raw.map(numbers) if numbers else pd.to_numeric(level_raw, errors="coerce")
    frame["_level"] = level.astype("float64").fillna(0).to_numpy()
    rises = frame["_level"] > frame.groupby(ticket)["_level"].shift()
    label = rises.groupby(frame[ticket]).any()
    first = frame.groupby(ticket, sort=False).head(1).set_index(ticket)
    first["_label"] = label.reindex(first.index).astype(int)
    return first


def baseline_features(first: pd.DataFrame, mapping, without: set[str] = frozenset()) -> pd.DataFrame:
    skip = {mapping.escalation.column, mapping.columns["event_time"], "_t", "_level", "_label", *without}
    out = pd.DataFrame(index=first.index)
    for column in first.columns:
        if column in skip:
            continue
        values = first[column]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().mean() > 0.95:
            out[re.sub(r"\W+", "_", column)] = numbers
        elif values.nunique() < 0.5 * len(values) and not values.astype("string").str.match(r"^\d{4}-\d{2}").any():
            out[re.sub(r"\W+", "_", column)] = values.astype("category")
    out["hour"] = first["_t"].dt.hour
    out["weekday"] = first["_t"].dt.weekday
    return out


def run_baseline(raw: pd.DataFrame, mapping, test_ids: pd.Index, without: set[str] = frozenset()) -> pd.Series:
    """Independent LightGBM on first rows (`without` these columns); scores of the test tickets."""
    first = first_rows(raw, mapping)
    order = first["_t"].sort_values(kind="stable").index
    n = len(order)
    parts = {"train": order[: int(round(n * TRAIN))], "valid": order[int(round(n * TRAIN)):int(round(n * (TRAIN + VALID)))],
             "test": order[int(round(n * (TRAIN + VALID))):]}
    x = baseline_features(first, mapping, without)
    model = lgb.LGBMClassifier(n_estimators=2000, learning_rate=0.03, verbose=-1, random_state=1, n_jobs=2)
    model.fit(x.loc[parts["train"]], first.loc[parts["train"], "_label"],
              eval_set=[(x.loc[parts["valid"]], first.loc[parts["valid"], "_label"])],
              callbacks=[lgb.early_stopping(100, verbose=False)])
    ids = [i for i in test_ids if i in x.index]
    return pd.Series(model.predict_proba(x.loc[ids])[:, 1], index=ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="an export (CSV); default: a simulated one")
    parser.add_argument("--mapping", type=Path, default=None, help="its mapping (default: the init-mapping draft)")
    parser.add_argument("--tickets", type=int, default=8000)
    parser.add_argument("--months", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--select", action="store_true", help="drop the test period; validate inside the fitting period")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            data = tmp / "export.csv"
            simulate_export(args.tickets, args.seed, months=args.months).to_csv(data, index=False)
        if args.mapping is None:
            draft = draft_mapping(read_for_profile(data, ReadSpec()), "bench-draft")
            mapping_path = tmp / "draft.yaml"
            mapping_path.write_text(draft.text)
        else:
            mapping_path = args.mapping
        mapping = load_mapping(mapping_path)
        imported = import_export(data, mapping)
        raw = read_for_profile(data, mapping.read, max_rows=10**9)
        events = imported.events
        if args.select:
            created = pd.to_datetime(events.groupby("ticket_id")["created_at"].first(), utc=True).sort_values()
            kept = created.index[: int(round(len(created) * (TRAIN + VALID)))]
            events = events[events["ticket_id"].isin(kept)].reset_index(drop=True)
            raw = raw[raw[mapping.columns["ticket_id"]].astype("string").str.strip().isin(kept)]
        params = override_params(adopt_mapping(load_params(PARAMS), mapping.closing_statuses, imported.feature_extras),
                                 args.overrides)
        result = train_models(write_canonical(events, tmp / "events.parquet"), params)
    test = result.snapshots[(result.snapshots[SPLIT] == "test") & (result.snapshots["position"] == 0)]
    ours = result.test_scores[result.test_scores["position"] == 0]
    base = run_baseline(raw, mapping, pd.Index(test["ticket_id"]))
    identities = {c for f in ("customer_id", "agent_id") for c in mapping.sources(f)}
    base_no_ids = run_baseline(raw, mapping, pd.Index(test["ticket_id"]), identities)
    y = test.set_index("ticket_id")["escalates"].reindex(base.index)
    window = "validation inside the fitting period (--select)" if args.select else "test period"
    print(f"export: {data if args.data else f'simulated, {args.tickets:,} tickets, seed {args.seed}'}; "
          f"mapping: {mapping_path.name if args.mapping else 'init-mapping draft, as drafted'}; "
          f"overrides: {', '.join(args.overrides) or 'none'}; {window}")
    print(f"extra features: {', '.join(params.features.extra_categorical) or 'none'}; left out by the audit: "
          f"{', '.join(imported.excluded) or 'nothing'}")
    print(f"{'first-event ROC-AUC':<28}{'pipeline':>10}{'baseline':>10}   rows  positives")
    print(f"{'':<28}{roc_auc_score(ours['escalates'], ours['probability']):>10.4f}"
          f"{roc_auc_score(y, base):>10.4f}  {len(y):>5}  {int(y.sum()):>9}")
    print(f"baseline without the identity columns ({', '.join(sorted(identities))}): "
          f"{roc_auc_score(y, base_no_ids.reindex(base.index)):.4f}")
    print(f"pipeline, all positions: ROC-AUC {result.metrics['test_roc_auc']:.4f}, PR-AUC {result.metrics['test_pr_auc']:.4f}")


if __name__ == "__main__":
    main()
