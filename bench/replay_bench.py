"""Replay benchmark: `escalation-risk replay` on the demo test period at two tick lengths, A B A B.

Each run replays every event of the tickets created in the model's test period through a fresh
store and the watcher on a simulated clock (serving/replay.py). Prints per run the wall time,
events/s (history events over wall time, ticks included), ticks and ticket re-scores/s, then
medians. Goals: replay >= 20,000 events/s; `make replay` (REPLAY_TICK, default 1h) under 2 minutes.
Needs the demo model (`make train`).

    .venv/bin/python bench/replay_bench.py [--ticks 5m,1h] [--rounds 2] [--to DATE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

import pandas as pd  # noqa: E402

from bundle.model import load_bundle  # noqa: E402
from features.settings import Settings  # noqa: E402
from serving.live_model import ModelHolder  # noqa: E402
from serving.policy import load_policy  # noqa: E402
from serving.replay import load_replay_events, parse_duration, replay_history, select_period  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", default="5m,1h")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--to", default=None, help="replay tickets created before this date only")
    args = parser.parse_args()
    logging.getLogger("escalation_risk.watcher").setLevel(logging.WARNING)
    settings = Settings(mlflow_tracking_uri=None, watch_lease_seconds=2 * 86400, watch_batch_size=5000)
    metadata = load_bundle(settings.resolved_model_path).metadata
    start = pd.Timestamp(metadata["data_window"]["test"]["created_from"])
    t0 = time.perf_counter()
    events = select_period(load_replay_events(settings.resolved_data_path), start,
                           pd.Timestamp(args.to, tz="UTC") if args.to else None)
    print(f"{len(events):,} events of {events['ticket_id'].nunique():,} tickets (read in {time.perf_counter() - t0:.1f} s)")
    policy = load_policy(settings.resolved_policy_path)
    ticks = args.ticks.split(",")
    results: dict[str, list[tuple[float, int, int]]] = {t: [] for t in ticks}
    for round_ in range(args.rounds):
        for tick in ticks:
            began = time.perf_counter()
            run = replay_history(events, ModelHolder(settings, settings.watch_text_cache_entries), policy, settings,
                                 parse_duration(tick))
            wall = time.perf_counter() - began  # store set-up and model load included
            results[tick].append((wall, len(run.tick_times), len(run.observations)))
            print(f"round {round_ + 1} tick {tick:>4}: {wall:7.1f} s, {run.n_events / wall:8,.0f} events/s, "
                  f"{len(run.tick_times):,} ticks, {len(run.observations) / wall:8,.0f} re-scores/s, "
                  f"{run.store_alerts} alerts")
    print(f"\n{'tick':<6}{'seconds':>9}{'events/s':>10}{'ticks':>8}{'re-scores/s':>13}")
    for tick, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        print(f"{tick:<6}{wall:>9.1f}{len(events) / wall:>10,.0f}{runs[0][1]:>8,}"
              f"{statistics.median(r[2] / r[0] for r in runs):>13,.0f}")
    print(f"goals: >= 20,000 events/s; make replay < 120 s ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
