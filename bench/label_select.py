"""Selection runs for the per-label model settings on the demo data: the test period never read.

    python bench/label_select.py [--data PATH] [--labels functional,...] [--variant NAME:KEY=VALUE[,KEY=VALUE]]...

Drops the test period (the newest `split.test` share of tickets by creation) before anything is
fitted, then runs training.train's steps on the rest, split again by time (the same shares):
snapshots of every label, one feature builder and matrix, then each chosen label's model
(training.train.fit_label) once per variant of its `escalation_model` settings. Prints, per label
and variant, the validation window's ROC-AUC of the served (calibrated) probability, of the raw
score (a calibration map can only tie scores, not reorder them), of the logistic baseline, and ECE.
The priority model is not fitted (no label needs it). Choose here, then read the test period once.
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
from training.config import load_params
from training.split import SPLIT
from training.train import (
    fit_label,
    make_feature_builder,
    prepare_snapshots,
    read_event_log,
    sample_training_rows,
)

ROOT = Path(__file__).resolve().parent.parent


def drop_test_period(events: pd.DataFrame, test_share: float) -> pd.DataFrame:
    """The log without its newest `test_share` of tickets (by creation time): the fitting period."""
    created = pd.to_datetime(events.groupby("ticket_id", sort=False)["created_at"].first(), utc=True)
    kept = created.sort_values(kind="stable").index[: int(round(len(created) * (1 - test_share)))]
    return events[events["ticket_id"].isin(kept)].reset_index(drop=True)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    changes = {}
    for setting in filter(None, settings.split(",")):
        key, _, value = setting.partition("=")
        changes[key.strip()] = yaml.safe_load(value)
    return name, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="event log (default: the demo data)")
    parser.add_argument("--params", type=Path, default=ROOT / "training" / "params.yaml")
    parser.add_argument("--labels", default=None, help="comma-separated labels to fit (default: all but the primary)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="escalation_model changes for the chosen labels, e.g. 'flat:monotone_increasing=[]'")
    parser.add_argument("--threads", type=int, default=None, help="LightGBM threads (default: the params')")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.threads:
        params = params.model_copy(update={"num_threads": args.threads})
    data = args.data or Settings().resolved_data_path
    names = args.labels.split(",") if args.labels else [label.name for label in params.list_labels()[1:]]
    variants = [("as is", {})] + [parse_variant(v) for v in args.variant]

    events = drop_test_period(read_event_log(data), params.split.test)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fitting_period.parquet"
        events.to_parquet(path, index=False)
        _, snapshots, tickets = prepare_snapshots(path, params)
    parts = {p: (snapshots[SPLIT] == p).to_numpy() for p in ("train", "valid", "test")}
    # training.train's rows of the training matrix the escalation models fit on (all unless capped)
    fit_rows = sample_training_rows(snapshots, parts["train"], {"escalation": params.escalation_model.max_train_rows},
                                    params.seed)["escalation"][parts["train"]]
    builder = make_feature_builder(params).fit(snapshots.loc[parts["train"]], tickets)
    x = {p: builder.transform(snapshots.loc[mask]) for p, mask in parts.items()}
    window = snapshots.loc[parts["test"], "created_at"]
    print(f"selection run on {data}: test period dropped; validation window = tickets opened "
          f"{window.min():%Y-%m-%d} to {window.max():%Y-%m-%d}\n")
    print(f"{'label':<20}{'variant':<28}{'ROC-AUC':>9}{'raw':>9}{'logistic':>10}{'ECE':>8}{'positives':>11}{'seconds':>9}")
    for name in names:
        label = next(lb for lb in params.list_labels() if lb.name == name)
        y = snapshots[label_column(name)].to_numpy()
        y_part = {p: y[mask] for p, mask in parts.items()}
        for variant, changes in variants:
            spec = label.model_copy(update={"escalation_model": {**label.escalation_model, **changes}})
            started = time.perf_counter()
            done = fit_label(params, spec, builder, snapshots, parts, x, y_part, fit_rows)
            seconds = time.perf_counter() - started
            scores = done.test_scores
            raw = evaluate.score_ranking(scores["escalates"].to_numpy(), scores["raw_probability"].to_numpy(), ())
            m = done.metrics
            print(f"{name:<20}{variant:<28}{m['test_roc_auc']:>9.4f}{raw['roc_auc']:>9.4f}"
                  f"{m['baseline_logistic_roc_auc']:>10.4f}{m['test_ece']:>8.4f}{int(np.sum(scores['escalates'])):>11}"
                  f"{seconds:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
