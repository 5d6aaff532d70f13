"""Ticket store benchmark: the cost of recording, the queue read, and ingest speed (issue: live ticket state).

Three measurements, each side by side in rounds A B A B, medians printed in tables:
1. Server CPU per single-ticket POST /v1/score, recording on (ESCALATION_RISK_STATE=on, a fresh SQLite
   store) vs off (stateless), on one gunicorn worker each: psutil CPU of the worker tree over a stream
   of ticket updates (each ticket created, then updated), sequential keep-alive requests. Goal: on/off <= 1.25.
2. GET /v1/queue?limit=50 with 100,000 open scored tickets in the store (A: unfiltered, B: one group),
   over HTTP against the same service: median latency. Goal: < 50 ms.
3. `escalation-risk ingest` of a generated event log into a fresh SQLite store (A: batches of 5,000,
   B: batches of 1,000; or with --ingest-against CHECKOUT, A: this code, B: that checkout's, e.g. main's
   worktree): events recorded per second of the command's run. Goal: >= 20,000 events/s.

Needs a trained model (`make train`; ESCALATION_RISK_MODELS_DIR / ESCALATION_RISK_DATA_PATH as usual).

    .venv/bin/python bench/store_bench.py [--requests 2000] [--queue-tickets 100000] [--ingest-tickets 20000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import CANONICAL_COLUMNS, validate_events  # noqa: E402
from features.settings import Settings  # noqa: E402
from features.synthetic import generate_event_log  # noqa: E402
from serving.store.db import create_store_engine, upgrade_database  # noqa: E402
from serving.store.tickets import TicketStore  # noqa: E402
from tests.reliability.harness import Service, start_service  # noqa: E402
from training.registry import to_wire_format  # noqa: E402


def service_env(settings: Settings, state: str, store_url: str) -> dict[str, str]:
    return {"ESCALATION_RISK_API_KEYS": "", "ESCALATION_RISK_STATE": state, "ESCALATION_RISK_STORE_URL": store_url,
            "ESCALATION_RISK_MODELS_DIR": str(settings.resolved_models_dir), "OMP_NUM_THREADS": "1",
            "ESCALATION_RISK_THREADS": "1"}


def update_stream(settings: Settings, n: int) -> list[bytes]:
    """n request bodies: demo tickets' updates in time order (creation first), renamed so the store starts empty."""
    events = pd.read_parquet(settings.resolved_data_path)
    events = events.sort_values("event_time", kind="stable").head(n)
    rows = to_wire_format(events[[c for c in CANONICAL_COLUMNS if c in events]]).to_dict(orient="records")
    return [json.dumps({**row, "ticket_id": f"bench-{row['ticket_id']}"}).encode() for row in rows]


def worker_cpu(service: Service) -> float:
    total = 0.0
    for pid in service.worker_pids():
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def post_all(service: Service, bodies: list[bytes]) -> tuple[float, int]:
    """(worker CPU seconds, errors) for sending every body once, sequentially over one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    errors = 0
    before = worker_cpu(service)
    for body in bodies:
        conn.request("POST", "/v1/score", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        errors += response.status != 200
    used = worker_cpu(service) - before
    conn.close()
    return used, errors


def bench_recording(settings: Settings, n_requests: int, rounds: int, work: Path) -> dict[str, list[float]]:
    bodies = update_stream(settings, n_requests)
    warm = bodies[: min(200, len(bodies))]
    results: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for state in ("off", "on"):  # A B A B
            store_url = f"sqlite:///{work / f'recording-{r}-{state}.db'}"
            service = start_service(service_env(settings, state, store_url), work / f"rec-{r}-{state}.log", workers=1)
            try:
                post_all(service, [json.dumps({**json.loads(b), "ticket_id": "warm-" + json.loads(b)["ticket_id"]})
                                   .encode() for b in warm])
                used, errors = post_all(service, bodies)
            finally:
                service.stop()
            if errors:
                raise RuntimeError(f"{errors} requests failed with state={state}; see {work}/rec-{r}-{state}.log")
            results[state].append(used / len(bodies) * 1e6)
            print(f"  round {r + 1} state={state}: {results[state][-1]:.0f} µs CPU per request", flush=True)
    return results


def fill_queue(store_url: str, n: int, groups: int = 20) -> None:
    """n open tickets, each with one score (random-looking probabilities), written in batches."""
    upgrade_database(store_url)
    store = TicketStore(create_store_engine(store_url))
    start = datetime(2026, 5, 1, tzinfo=UTC)
    for offset in range(0, n, 5000):
        events, scores = [], []
        for i in range(offset, min(offset + 5000, n)):
            moment = (start + timedelta(seconds=i)).isoformat()
            events.append({"ticket_id": f"Q{i:07d}", "event_time": moment, "created_at": moment, "status": "open",
                           "group": f"team-{i % groups}", "category": "billing", "customer_id": f"C{i % 9000}"})
            probability = ((i * 2654435761) % 1_000_003) / 1_000_003
            band = "high" if probability > 0.8 else "medium" if probability > 0.5 else "low"
            scores.append({"ticket_id": f"Q{i:07d}", "escalation": {"probability": probability, "band": band,
                                                                   "escalate_now": probability > 0.9, "reasons": []},
                           "action": {}, "priority": {}, "model": {}, "scored_at": moment, "warnings": []})
        store.record_events(events, "bench")
        store.record_scores(scores, "bench", start)


def bench_queue(settings: Settings, n_tickets: int, rounds: int, work: Path, calls: int = 50) -> dict[str, list[float]]:
    store_url = f"sqlite:///{work / 'queue.db'}"
    started = time.perf_counter()
    fill_queue(store_url, n_tickets)
    print(f"  filled the store with {n_tickets:,} open tickets in {time.perf_counter() - started:.0f} s", flush=True)
    service = start_service(service_env(settings, "on", store_url), work / "queue.log", workers=1)
    paths = {"all": "/v1/queue?limit=50", "one group": "/v1/queue?limit=50&group=team-7"}
    results: dict[str, list[float]] = {name: [] for name in paths}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        for _ in range(rounds):
            for name, path in paths.items():  # A B A B
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    conn.request("GET", path)
                    response = conn.getresponse()
                    body = json.loads(response.read())
                    times.append((time.perf_counter() - t0) * 1000)
                    if response.status != 200 or len(body["tickets"]) != 50:
                        raise RuntimeError(f"queue answered {response.status}: {str(body)[:200]}")
                results[name].append(statistics.median(times))
        total = body["total"]
        conn.close()
    finally:
        service.stop()
    print(f"  queue total for the last filter: {total:,}", flush=True)
    return results


def bench_ingest(n_tickets: int, rounds: int, work: Path, against: Path | None = None
                 ) -> tuple[dict[str, list[float]], int]:
    """Events/s of the ingest command. A: batches of 5,000, B: of 1,000; with `against` (another checkout,
    e.g. main's worktree), A: this checkout, B: that one, both batches of 5,000 on the same export."""
    export = work / "ingest.parquet"
    generate_event_log(export, n_tickets=n_tickets, seed=5)
    n_events = len(validate_events(pd.read_parquet(export)).events)
    variants = ({"batch 5000": (ROOT, 5000), "batch 1000": (ROOT, 1000)} if against is None
                else {"this 5000": (ROOT, 5000), "against 5000": (Path(against).resolve(), 5000)})
    results: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, (root, batch) in variants.items():  # A B A B
            store = work / f"ingest-{r}-{name.replace(' ', '')}.db"
            env = {**os.environ, "ESCALATION_RISK_STORE_URL": f"sqlite:///{store}", "PYTHONPATH": str(root),
                   "ESCALATION_RISK_REPORTS_DIR": str(work)}
            cli = [sys.executable, "-m", "cli"]  # that checkout's code (PYTHONPATH, cwd), whichever one is installed
            subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=root)
            t0 = time.perf_counter()
            done = subprocess.run([*cli, "ingest", "--data", str(export), "--batch-size", str(batch)],
                                  env=env, check=True, capture_output=True, text=True, cwd=root)
            seconds = time.perf_counter() - t0
            results[name].append(n_events / seconds)
            print(f"  round {r + 1} {name}: {n_events / seconds:,.0f} events/s ({seconds:.1f} s; "
                  f"{done.stdout.strip()}; load {os.getloadavg()[0]:.2f})", flush=True)
    return results, n_events


def table(title: str, unit: str, results: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'':<14}{'median':>12}  {'rounds':<40}")
    for name, values in results.items():
        print(f"{name:<14}{statistics.median(values):>12,.1f}  {', '.join(f'{v:,.1f}' for v in values)}  ({unit})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="single-ticket requests per recording round")
    parser.add_argument("--queue-tickets", type=int, default=100_000)
    parser.add_argument("--ingest-tickets", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per measurement")
    parser.add_argument("--only", choices=["recording", "queue", "ingest"], default=None)
    parser.add_argument("--ingest-against", type=Path, default=None,
                        help="another checkout (e.g. main's worktree): ingest A B A B, this one vs that one")
    args = parser.parse_args()
    settings = Settings()
    if not settings.resolved_model_path.exists() or not settings.resolved_data_path.exists():
        sys.exit("needs a trained model and its demo data: run `make train` first")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        work = Path(tmp)
        summary = []
        if args.only in (None, "recording"):
            print("1. recording on vs off (server CPU per single-ticket request)", flush=True)
            rec = bench_recording(settings, args.requests, args.rounds, work)
            table("server CPU per request", "µs", rec)
            ratio = statistics.median(rec["on"]) / statistics.median(rec["off"])
            summary.append(f"recording on / off CPU per request: {ratio:.2f}x (goal <= 1.25x)")
        if args.only in (None, "queue"):
            print(f"\n2. GET /v1/queue top 50 of {args.queue_tickets:,} open tickets", flush=True)
            queue = bench_queue(settings, args.queue_tickets, args.rounds, work)
            table("GET /v1/queue?limit=50 latency (median of 50 calls per round)", "ms", queue)
            summary.append(f"queue top 50 of {args.queue_tickets:,}: {statistics.median(queue['all']):.1f} ms "
                           f"(one group {statistics.median(queue['one group']):.1f} ms; goal < 50 ms)")
        if args.only in (None, "ingest"):
            print(f"\n3. escalation-risk ingest ({args.ingest_tickets:,} generated tickets)", flush=True)
            ingest, n_events = bench_ingest(args.ingest_tickets, args.rounds, work, args.ingest_against)
            table(f"ingest of {n_events:,} events into a fresh SQLite store", "events/s", ingest)
            this = statistics.median(ingest["batch 5000" if args.ingest_against is None else "this 5000"])
            summary.append(f"ingest: {this:,.0f} events/s with the default batch (goal >= 20,000)")
            if args.ingest_against is not None:
                summary.append(f"ingest this / {args.ingest_against}: "
                               f"{this / statistics.median(ingest['against 5000']):.2f}x (medians)")
        print("\nsummary\n  " + "\n  ".join(summary))


if __name__ == "__main__":
    main()
