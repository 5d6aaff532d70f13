"""Single process vs Dask LocalCluster on a large generated history: time and peak memory per stage.

    python bench/scale_bench.py                          # 5,000,000 tickets (generated if missing; long)
    python bench/scale_bench.py --tickets 1000000 --data bench/results/events_1m.parquet

Each engine runs in its own subprocess under a watchdog that sums the RSS of the process and
all its children (the Dask workers) and kills the tree above --ceiling-gb, so a size the
single-process path cannot hold fails cleanly (and is reported as such) instead of
OOM-killing a shared machine. Prints one table; MLflow is not involved.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

STAGES = {
    "prepare": "read + validate + snapshots + split",
    "features": "features (fit on train, transform)",
    "escalation_fit": "fit escalation model + calibrate",
    "priority_fit": "fit priority model",
    "baseline_fit": "logistic baseline + gather test",
}


def measure_tree_rss(process: psutil.Process) -> int:
    """RSS of a process and all its descendants (a LocalCluster's workers are children)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class TreePeak:
    """Samples the tree's RSS in a thread; `reset` starts a new stage's peak."""

    def __init__(self, process: psutil.Process, interval: float = 0.2):
        self.process, self.interval, self.peak = process, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, measure_tree_rss(self.process))
            time.sleep(self.interval)

    def start(self) -> TreePeak:
        self._thread.start()
        return self

    def reset(self) -> None:
        self.peak = measure_tree_rss(self.process)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(engine: str, data_path: Path, params_path: Path, progress_path: Path, workers: int,
               worker_memory: str) -> None:
    """Child process: train with one engine, appending one JSON line per finished stage."""
    from features.history import count_tickets
    from training.config import load_params

    params = load_params(params_path)
    memory = TreePeak(psutil.Process()).start()

    def record(**fields) -> None:
        with open(progress_path, "a") as handle:
            handle.write(json.dumps(fields) + "\n")

    @contextmanager
    def hook(name: str):
        record(event="start", stage=name)
        memory.reset()
        started = time.perf_counter()
        yield
        record(event="end", stage=name, seconds=time.perf_counter() - started, peak_gb=memory.peak / 2**30)

    if engine == "single":
        from training.train import train_models

        result = train_models(data_path, params, step_hook=hook)
    else:
        from training.dask_train import open_client, train_models_dask

        with tempfile.TemporaryDirectory(dir=data_path.parent) as work, \
                open_client(n_workers=workers, memory_limit=worker_memory) as client:
            result = train_models_dask(data_path, params, client, Path(work), step_hook=hook)
    memory.stop()
    split = result.split_table
    record(event="done", total_seconds=result.timings["total_seconds"], test_roc_auc=result.metrics["test_roc_auc"],
           rows=result.validation.n_input_rows, tickets=count_tickets(result.tickets),
           snapshots=int(split["snapshots"].sum()),
           best_iterations=[int(result.metrics[f"best_iteration_{m}"]) for m in ("escalation", "priority")])


def watch_engine(engine: str, args: argparse.Namespace) -> dict:
    """Parent: run one engine in a subprocess, kill its whole tree above the ceiling."""
    progress_path = args.data.parent / f".scale_bench_{engine}.jsonl"
    progress_path.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--run-engine", engine, "--data", str(args.data), "--params",
               str(args.params), "--progress", str(progress_path), "--workers", str(args.workers),
               "--worker-memory", args.worker_memory]
    child = subprocess.Popen(command)
    process = psutil.Process(child.pid)
    ceiling = args.ceiling_gb * 2**30
    peak, killed = 0, False
    started = time.perf_counter()
    while child.poll() is None:
        rss = measure_tree_rss(process)
        peak = max(peak, rss)
        if rss > ceiling:
            killed = True
            for p in [*process.children(recursive=True), process]:
                with suppress(psutil.Error):
                    p.kill()
            child.wait()
            break
        time.sleep(0.2)
    events = [json.loads(line) for line in progress_path.read_text().splitlines()] if progress_path.exists() else []
    progress_path.unlink(missing_ok=True)
    return {"engine": engine, "events": events, "killed": killed, "returncode": child.returncode,
            "peak_gb": peak / 2**30, "wall_seconds": time.perf_counter() - started}


def format_table(runs: list[dict], ceiling_gb: float) -> str:
    lines = [f"{'stage':<38}" + "".join(f"{r['engine'] + ' s':>12}{r['engine'] + ' GB':>12}" for r in runs)]
    for stage, label in STAGES.items():
        cells = ""
        for run in runs:
            ended = {e["stage"]: e for e in run["events"] if e["event"] == "end"}
            started = {e["stage"] for e in run["events"] if e["event"] == "start"}
            if stage in ended:
                cells += f"{ended[stage]['seconds']:>12.1f}{ended[stage]['peak_gb']:>12.2f}"
            elif stage in started:
                why = f"KILLED >{ceiling_gb:g}GB" if run["killed"] else f"FAILED rc={run['returncode']}"
                cells += f"{why:>24}"
            else:
                cells += f"{'-':>12}{'-':>12}"
        lines.append(f"{label:<38}{cells}")
    cells = ""
    for run in runs:
        done = [e for e in run["events"] if e["event"] == "done"]
        cells += f"{done[0]['total_seconds'] if done else float('nan'):>12.1f}{run['peak_gb']:>12.2f}"
    lines.append(f"{'whole training (peak of process tree)':<38}{cells}")
    for run in runs:
        done = [e for e in run["events"] if e["event"] == "done"]
        if done:
            d = done[0]
            lines.append(f"{run['engine']}: {d['rows']:,} updates, {d['tickets']:,} tickets, {d['snapshots']:,} "
                         f"snapshots, test ROC-AUC {d['test_roc_auc']:.4f}, best iterations (escalation, "
                         f"priority) {tuple(d['best_iterations'])}")
        else:
            verdict = f"killed at the {args_ceiling(ceiling_gb)} ceiling" if run["killed"] else "failed"
            lines.append(f"{run['engine']}: {verdict} (return code {run['returncode']}) after "
                         f"{run['wall_seconds']:.0f} s")
    return "\n".join(lines)


def args_ceiling(ceiling_gb: float) -> str:
    return f"{ceiling_gb:g} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=5_000_000)
    parser.add_argument("--data", type=Path, default=None, help="event log (default bench/results/events_<N>.parquet)")
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parent.parent / "training/params.yaml")
    parser.add_argument("--engines", default="single,dask", help="comma-separated, run in this order")
    parser.add_argument("--ceiling-gb", type=float, default=12.0, help="kill an engine's process tree above this RSS")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--worker-memory", default="4GB", help="per-worker memory limit (Dask spills to disk above)")
    parser.add_argument("--run-engine", choices=["single", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = args.data or Path(__file__).resolve().parent / "results" / f"events_{args.tickets}.parquet"
    if args.run_engine:
        run_engine(args.run_engine, args.data, args.params, args.progress, args.workers, args.worker_memory)
        return
    if not args.data.exists():
        from features.synthetic import generate_event_log

        args.data.parent.mkdir(parents=True, exist_ok=True)
        summary = generate_event_log(args.data, n_tickets=args.tickets, progress=True)
        print(f"generated {summary['rows']:,} updates of {summary['tickets']:,} tickets in {summary['seconds']:.0f} s")
    runs = []
    for engine in args.engines.split(","):
        runs.append(watch_engine(engine, args))
        # Raw events kept beside the data, so a long run's figures survive whatever follows.
        args.data.with_suffix(".scale_bench.json").write_text(json.dumps(runs, indent=1))
    print(f"\nscale benchmark on {args.data} ({psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GB; dask = LocalCluster of {args.workers} worker "
          f"processes x 1 thread, {args.worker_memory} each; ceiling {args.ceiling_gb:g} GB per engine)")
    print(format_table(runs, args.ceiling_gb))
    print("GB = peak RSS of the engine's whole process tree (client + workers) during the stage")


if __name__ == "__main__":
    main()
