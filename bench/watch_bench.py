"""Watch-tick benchmark: one tick of the queue watcher over 100,000 open tickets in a SQLite store.

Fills a fresh store (in /dev/shm when there is one) with N open tickets (the demo history's
tickets, cloned under new ids, as of their last update), then times, A B A B:
  A  watcher.tick(now): read every open ticket's state from the store, re-score it through
     serving.scoring.score_states, apply the alert logic and write the latest scores (the real tick);
  B  Watcher.rescore alone on the same states, in the same batches, with the collector paused as in
     a tick (the scoring floor: no store; reasons only for the tickets above the line).
Prints seconds, tickets/s and the ratio A/B per round, then the first tick and the median steady
tick; the goal is A < 30 s for 100,000 tickets on 2 cores. With --fresh-texts every ticket has its own texts: round 1's tick
is the worst case (the watcher's text cache is cold, every text is computed), later rounds are a
steady tick: before each, --new-messages (default 10 %) of the tickets get a new customer message
through the store, so those texts are computed again, as between two real ticks. Needs the demo model (`make train`).

    .venv/bin/python bench/watch_bench.py [--tickets 100000] [--rounds 2] [--batch 2000] [--fresh-texts] [--new-messages 0.1]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the watcher and gunicorn run LightGBM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from features.settings import Settings  # noqa: E402
from serving.destinations import Destinations  # noqa: E402
from serving.gc_pause import paused_collection  # noqa: E402
from serving.live_model import ModelHolder  # noqa: E402
from serving.policy import load_policy  # noqa: E402
from serving.replay import to_event_dicts  # noqa: E402
from serving.store.db import create_store_engine, upgrade_database  # noqa: E402
from serving.store.tickets import TicketStore  # noqa: E402
from serving.watcher import Watcher, watch_state  # noqa: E402


def open_tickets(settings: Settings, n: int, fresh_texts: bool = False) -> list[dict]:
    """N open tickets: each demo ticket's last state before closing, cloned under new ids
    (`fresh_texts`: each clone's description and latest customer message made its own)."""
    events = pd.read_parquet(settings.resolved_data_path)
    last = events.loc[~events["status"].isin(["closed", "resolved"])].groupby("ticket_id").tail(1)
    base = to_event_dicts(last.drop(columns=["escalation_type"]))
    out = []
    for i in range(n):
        ticket = dict(base[i % len(base)])
        ticket["ticket_id"] = f"{ticket['ticket_id']}-{i // len(base)}"
        if fresh_texts:
            ticket["description"] = f"{ticket.get('description') or ''} (ref {i})"
            ticket["last_customer_message"] = f"{ticket.get('last_customer_message') or ''} order {i}"
        out.append(ticket)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--fresh-texts", action="store_true",
                        help="every ticket its own texts (the worst case: round 1 computes every text)")
    parser.add_argument("--new-messages", type=float, default=0.1,
                        help="share of the tickets that get a new customer message (a partial event, through "
                             "the store) before each round after the first: their texts are computed again")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="watch-bench-", dir=shm if shm.is_dir() else None))
    try:
        url = f"sqlite:///{scratch / 'store.db'}"
        upgrade_database(url)
        engine = create_store_engine(url)
        store = TicketStore(engine)
        settings = Settings(mlflow_tracking_uri=None, watch_batch_size=args.batch, watch_lease_seconds=3600,
                            store_url=url)
        tickets = open_tickets(settings, args.tickets, args.fresh_texts)
        started = time.perf_counter()
        for i in range(0, len(tickets), 5000):
            store.record_events(tickets[i:i + 5000], "bench")
        print(f"store filled: {len(tickets):,} open tickets in {time.perf_counter() - started:.1f} s")
        holder = ModelHolder(settings, settings.watch_text_cache_entries)  # as `escalation-risk watch`
        holder.history_source = store.read_history_since
        assert holder.reload().ok, holder.last_error
        policy = load_policy(settings.resolved_policy_path)
        watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations(), holder_id="bench")
        now = max(pd.Timestamp(t["event_time"]) for t in tickets).to_pydatetime().astimezone(UTC)
        states = [s for batch in store.iter_open_tickets(args.batch) for s in batch]
        rows = []
        rng = random.Random(7)
        for round_ in range(args.rounds):
            now += timedelta(minutes=5)
            n_new = int(args.new_messages * len(tickets)) if round_ else 0
            if n_new:  # as the service records them between ticks (not timed)
                chosen = rng.sample(range(len(tickets)), n_new)
                sent = (now - timedelta(minutes=1)).isoformat()
                messages = [{"ticket_id": tickets[i]["ticket_id"], "event_time": sent,
                             "customer_message": f"still waiting, round {round_}, order {i}"} for i in chosen]
                for i in range(0, n_new, 5000):
                    store.record_events(messages[i:i + 5000], "bench")
                states = [s for batch in store.iter_open_tickets(args.batch) for s in batch]
            t0 = time.perf_counter()
            report = watcher.tick(now)
            a = time.perf_counter() - t0
            assert report.ran and report.tickets == len(tickets), report
            iso = now.isoformat()
            t0 = time.perf_counter()
            with paused_collection():
                holder.live.sync_history()
                for i in range(0, len(states), args.batch):
                    watcher.rescore(holder.live, [watch_state(s, iso) for s in states[i:i + args.batch]], now)
            b = time.perf_counter() - t0
            rows.append((a, b))
            print(f"round {round_ + 1}: A tick {a:6.1f} s ({len(tickets) / a:,.0f} tickets/s, "
                  f"{report.alerts_raised} alerts)   B rescore only {b:6.1f} s ({len(tickets) / b:,.0f} tickets/s)"
                  f"   A/B {a / b:.2f}")
        # Round 1 computes every text (a watcher just started); later rounds are the steady ticks.
        steady = rows[1:] or rows
        per = 100_000 / len(tickets)
        print(f"\n{'':<34}{'A tick s':>9}{'B rescore s':>12}{'A/B':>6}")
        for name, part in (("first tick (texts computed)", rows[:1]), ("steady tick (median of the rest)", steady)):
            a_med, b_med = statistics.median(r[0] for r in part), statistics.median(r[1] for r in part)
            print(f"{name:<34}{a_med:>9.1f}{b_med:>12.1f}{a_med / b_med:>6.2f}")
        for name, part in (("steady", steady), ("first", rows[:1])):
            a_med = statistics.median(r[0] for r in part)
            print(f"goal, {name} tick over 100,000 open tickets < 30 s -> {'met' if a_med * per < 30 else 'NOT met'} "
                  f"({a_med * per:.1f} s per 100,000)")
        print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        engine.dispose()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
