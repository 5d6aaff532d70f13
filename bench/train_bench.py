"""Training at scale: generate N tickets' history, then time each step and its peak memory.

    python bench/train_bench.py                 # 1,000,000 tickets (several minutes)
    python bench/train_bench.py --tickets 100000 --data /tmp/events_100k.parquet

Prints one table: step, seconds, peak RSS of the process during the step, rows out.
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from features.build import FeatureBuilder
from features.synthetic import generate_event_log
from training.config import load_params
from training.train import fit_lightgbm, prepare_snapshots


class PeakMemory:
    """Samples this process's RSS in a thread; the peak per step is what a laptop must hold."""

    def __init__(self, interval: float = 0.05):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def start(self) -> PeakMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak = self.process.memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("bench/results/events_1m.parquet"),
                        help="event log to use; generated there if missing")
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parent.parent / "training/params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    rows: list[tuple[str, float, float, str]] = []
    memory = PeakMemory().start()

    @contextmanager
    def step(name: str):
        memory.reset()
        started = time.perf_counter()
        box: dict = {}
        yield box
        rows.append((name, time.perf_counter() - started, memory.peak / 2**30, box.get("out", "")))
        print(f"  done: {name} in {rows[-1][1]:.1f} s", flush=True)

    if not args.data.exists():
        args.data.parent.mkdir(parents=True, exist_ok=True)
        with step("generate event log") as box:
            summary = generate_event_log(args.data, n_tickets=args.tickets, progress=True)
            box["out"] = f"{summary['rows']:,} rows"
    with step("read + validate + snapshots + split") as box:
        validation, snapshots, tickets = prepare_snapshots(args.data, params)
        box["out"] = f"{len(snapshots):,} snapshots of {len(tickets):,} tickets"
    is_train = (snapshots["split"] == "train").to_numpy()
    with step("features (fit on train, transform all)") as box:
        builder = FeatureBuilder(params.history.windows_days, params.history.smoothing, params.text.enabled,
                                 params.text.model_dump(exclude={"enabled"}), seed=params.seed)
        builder.fit(snapshots.loc[is_train], tickets)
        features = builder.transform(snapshots)
        box["out"] = f"{features.shape[0]:,} x {features.shape[1]} features"
    y = snapshots["escalates"].to_numpy()
    valid = (snapshots["split"] == "valid").to_numpy()
    with step("fit escalation model (LightGBM)") as box:
        model = fit_lightgbm(params.escalation_model, features.loc[is_train], y[is_train], features.loc[valid],
                             y[valid], params.seed, params.num_threads)
        box["out"] = f"{model.best_iteration_} trees"
    with step("score test period") as box:
        test = (snapshots["split"] == "test").to_numpy()
        prob = model.predict_proba(features.loc[test])[:, 1]
        from sklearn.metrics import roc_auc_score

        box["out"] = f"ROC-AUC {roc_auc_score(y[test], prob):.4f} on {int(test.sum()):,} rows"
    memory.stop()

    print(f"\ntraining benchmark: {args.data} ({psutil.cpu_count()} cores)")
    print(f"{'step':<42}{'seconds':>10}{'peak RSS GB':>13}  output")
    for name, seconds, peak, out in rows:
        print(f"{name:<42}{seconds:>10.1f}{peak:>13.2f}  {out}")
    core = [r for r in rows if r[0].startswith(("features", "fit"))]
    print(f"{'features + fit':<42}{sum(r[1] for r in core):>10.1f}{max(r[2] for r in rows):>13.2f}  (peak over all steps)")


if __name__ == "__main__":
    main()
