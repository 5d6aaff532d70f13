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

from features.history import count_tickets
from features.synthetic import generate_event_log
from training.config import load_params
from training.train import train_models


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
    peaks: dict[str, float] = {}
    memory = PeakMemory().start()

    @contextmanager
    def measure(name: str):
        memory.reset()
        yield
        peaks[name] = memory.peak / 2**30
        print(f"  done: {name}", flush=True)

    generated = ""
    if not args.data.exists():
        args.data.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with measure("generate"):
            summary = generate_event_log(args.data, n_tickets=args.tickets, progress=True)
        generated = f"generate {summary['rows']:,} rows: {time.perf_counter() - started:.1f} s, peak {peaks['generate']:.2f} GB\n"
    result = train_models(args.data, params, step_hook=measure)
    memory.stop()

    split = result.split_table
    print(f"\ntraining benchmark on {args.data} ({psutil.cpu_count()} cores, {params.num_threads} LightGBM threads)")
    print(generated + f"{result.validation.n_input_rows:,} updates, {count_tickets(result.tickets):,} tickets, "
          f"{int(split['snapshots'].sum()):,} snapshots (train {int(split.loc['train', 'snapshots']):,})")
    labels = {
        "prepare": "read + validate + snapshots + split",
        "features": "features (fit on train, transform all)",
        "escalation_fit": "fit escalation model + calibrate",
        "priority_fit": "fit priority model",
        "baseline_fit": "fit logistic baseline",
    }
    print(f"{'step':<42}{'seconds':>10}{'peak RSS GB':>13}")
    for name, label in labels.items():
        print(f"{label:<42}{result.timings[name + '_seconds']:>10.1f}{peaks[name]:>13.2f}")
    core = result.timings["features_seconds"] + result.timings["escalation_fit_seconds"] + result.timings["priority_fit_seconds"]
    print(f"{'features + both fits':<42}{core:>10.1f}{max(peaks[n] for n in labels):>13.2f}")
    print(f"{'whole training (all steps)':<42}{result.timings['total_seconds']:>10.1f}")
    print(f"test ROC-AUC {result.metrics['test_roc_auc']:.4f}, at creation {result.metrics['test_roc_auc_position_0']:.4f}, "
          f"ECE {result.metrics['test_ece']:.4f}, priority macro-F1 {result.metrics['test_priority_macro_f1']:.4f}")


if __name__ == "__main__":
    main()
