"""Serving benchmark: this service vs `mlflow models serve` vs a Flask hello-world (the HTTP floor).

Each server is started in turn on a free loopback port (A B C A B C) and loaded for a bounded
time with single-ticket requests at concurrency 1 and 8 and with 100-ticket batches. Prints
requests/s, p50/p99 latency and server CPU per ticket (psutil over the server's process tree),
then the ratios against the issue's goals. Needs a trained model: `make train` first.

    .venv/bin/python bench/serve_bench.py [--seconds 5] [--rounds 2] [--kinds service,mlflow,hello] [--fresh-texts]
    .venv/bin/python bench/serve_bench.py --per-label [--rounds 3]

With --fresh-texts each server start runs every scenario twice, texts repeated (warm caches)
and texts new in every request (the worst case), and both tables are printed.

`--per-label` instead measures what each label of a several-label bundle (features.labels) adds
to the scoring path the service runs per request (features.online + bundle.online_score): the
bundle is scored with its first k labels for k = 1..all (each label's history rates, model, path
contributions and reasons; the HTTP layer's cost does not depend on k), rounds interleaved
(k = 1, 2, ..., all, then again), medians per ticket, and the added cost per label from k = 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import CANONICAL_COLUMNS  # noqa: E402
from features.settings import Settings  # noqa: E402
from training.registry import to_wire_format  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_tickets(settings: Settings, n: int = 500) -> list[dict]:
    """The latest update of some demo tickets, in the JSON shape clients send."""
    events = pd.read_parquet(settings.resolved_data_path)
    latest = events.sort_values("event_time").groupby("ticket_id").tail(1).tail(n)
    return to_wire_format(latest[[c for c in CANONICAL_COLUMNS if c in latest]]).to_dict(orient="records")


def start(kind: str, port: int, settings: Settings) -> subprocess.Popen:
    env = {**os.environ, "ESCALATION_RISK_PORT": str(port), "ESCALATION_RISK_HOST": "127.0.0.1",
           "ESCALATION_RISK_API_KEYS": "", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if kind == "shap":  # the same service with exact TreeSHAP reasons (pred_contrib) instead of path reasons
        env["ESCALATION_RISK_REASONS"] = "shap"
    if kind in ("service", "shap"):
        # The scoring hot path, stateless: the cost of recording in the ticket store is bench/store_bench.py's.
        env["ESCALATION_RISK_STATE"] = "off"
        cmd = [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:create_served_app()"]
    elif kind == "hello":
        cmd = [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "--pythonpath", "bench",
               "hello_app:create_app()"]
    else:
        env["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow starts `uvicorn` from PATH
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{settings.registered_model_name}@champion",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(settings.workers)]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    ready_path = "/ping" if kind == "mlflow" else "/readyz"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", ready_path)
            if conn.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{kind} server did not become ready")


def stop(process: subprocess.Popen) -> None:
    """Stop the server we started (its own process group) and wait for it."""
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, 9)
        process.wait()


def server_cpu(process: subprocess.Popen) -> float:
    root = psutil.Process(process.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def body_for(kind: str, tickets: list[dict]) -> bytes:
    if kind == "mlflow":
        return json.dumps({"dataframe_records": tickets}).encode()
    return json.dumps(tickets[0] if len(tickets) == 1 else {"tickets": tickets}).encode()


def make_bodies(kind: str, tickets: list[dict], batch: int, fresh_texts: bool, tag: str = "") -> list[bytes]:
    """Request bodies to cycle through. With fresh texts every ticket of every body gets a description
    and latest message no request had before (the service's per-text caches never hit: `tag` makes
    each scenario's texts its own), enough bodies for the scenario's duration at the fastest rate seen here."""
    if not fresh_texts:
        return [body_for(kind, tickets[i:i + batch]) for i in range(0, len(tickets) - batch + 1, batch)]
    n_bodies = 40_000 if batch == 1 else 800
    bodies = []
    for j in range(n_bodies):
        group = [tickets[(j * batch + k) % len(tickets)] for k in range(batch)]
        group = [{**t, "description": f"{t.get('description') or ''} (ref {tag}{j}-{k})",
                  "last_customer_message": f"{t.get('last_customer_message') or ''} (ref {tag}{j}-{k})"}
                 for k, t in enumerate(group)]
        bodies.append(body_for(kind, group))
    return bodies


def load(kind: str, port: int, process: subprocess.Popen, tickets: list[dict], batch: int, concurrency: int,
         seconds: float, fresh_texts: bool = False, tag: str = "") -> dict:
    bodies = make_bodies(kind, tickets, batch, fresh_texts, tag)
    path = "/invocations" if kind == "mlflow" else "/v1/score"
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = [0.0]

    position = list(range(concurrency))  # carried from the warm-up into the measured window

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = position[k]
        while time.perf_counter() < stop_at[0]:
            started = time.perf_counter()
            conn.request("POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors[k] += 1
            latencies[k].append(time.perf_counter() - started)
            i += concurrency
        position[k] = i

    # warm-up, then the measured window
    stop_at[0] = time.perf_counter() + 1.0
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    latencies = [[] for _ in range(concurrency)]
    cpu_before = server_cpu(process)
    begin = time.perf_counter()
    stop_at[0] = begin + seconds
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed = time.perf_counter() - begin
    cpu = server_cpu(process) - cpu_before
    flat = np.array([x for part in latencies for x in part])
    n = len(flat)
    return {"requests_per_s": n / elapsed, "tickets_per_s": n * batch / elapsed,
            "p50_ms": float(np.percentile(flat, 50) * 1000), "p99_ms": float(np.percentile(flat, 99) * 1000),
            "cpu_ms_per_ticket": cpu / max(n * batch, 1) * 1000, "errors": sum(errors), "requests": n}


SCENARIOS = (("single c=1", 1, 1), ("single c=8", 1, 8), ("batch100 c=2", 100, 2))
KINDS = ("service", "mlflow", "hello", "shap")
DEFAULT_KINDS = ("service", "mlflow", "hello")


TEXT_MODES = {"warm": "texts repeated (text caches warm)", "fresh": "texts new in every request (no cache hits)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario")
    parser.add_argument("--rounds", type=int, default=2, help="A B C rounds")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help="servers to run, comma-separated: service, mlflow, hello, and shap (the service "
                             "with TreeSHAP reasons); default: service,mlflow,hello")
    parser.add_argument("--fresh-texts", action="store_true",
                        help="also measure with texts never sent before (no text-cache hits; the worst case), "
                             "side by side with repeated texts in the same run: each server start runs both")
    parser.add_argument("--per-label", action="store_true",
                        help="in-process: the scoring path's cost per ticket with the bundle's first k labels, k = 1..all")
    args = parser.parse_args()
    modes = ["warm", "fresh"] if args.fresh_texts else ["warm"]
    settings = Settings()
    if args.per_label:
        measure_per_label(settings, load_tickets(settings), args.rounds)
        return
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    tickets = load_tickets(settings)
    report_agreement(settings, tickets)
    results: dict[tuple[str, str, str], list[dict]] = {}
    for round_no in range(args.rounds):
        for kind in kinds:
            port = free_port()
            process = start(kind, port, settings)
            try:
                for mode in modes:
                    for name, batch, concurrency in SCENARIOS:
                        results.setdefault((kind, mode, name), []).append(
                            load(kind, port, process, tickets, batch, concurrency, args.seconds, mode == "fresh",
                                 tag=f"r{round_no}{name.replace(' ', '')}-"))
            finally:
                stop(process)

    print(f"\n{args.rounds} rounds (servers in turn: {' '.join(kinds)}), {args.seconds:g} s per scenario; "
          "medians over rounds")
    for mode in modes:
        print_table(results, kinds, mode, len(tickets))


def print_table(results: dict, kinds: list[str], mode: str, n_tickets: int) -> None:
    def med(kind: str, name: str, key: str) -> float:
        return float(np.median([x[key] for x in results[(kind, mode, name)]]))

    print(f"\ntexts: {TEXT_MODES[mode]}" + (f" ({n_tickets} tickets' texts)" if mode == "warm" else ""))
    print(f"{'server':8} {'scenario':13} {'req/s':>9} {'tickets/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU ms/ticket':>14} {'errors':>7}")
    for kind in kinds:
        for name, _, _ in SCENARIOS:
            runs = results[(kind, mode, name)]
            r = {k: float(np.median([x[k] for x in runs])) for k in runs[0]}
            print(f"{kind:8} {name:13} {r['requests_per_s']:9.1f} {r['tickets_per_s']:10.1f} {r['p50_ms']:8.2f} "
                  f"{r['p99_ms']:8.2f} {r['cpu_ms_per_ticket']:14.3f} {int(sum(x['errors'] for x in runs)):7d}")
    print(f"ratios, {mode} texts")
    for name in ("single c=1", "single c=8"):
        if "mlflow" in kinds and "service" in kinds:
            print(f"  {name}: service / mlflow throughput = "
                  f"{med('service', name, 'requests_per_s') / med('mlflow', name, 'requests_per_s'):.1f}x "
                  "(goal >= 15x)")
        if "hello" in kinds and "service" in kinds:
            print(f"  {name}: service / hello-world CPU per request = "
                  f"{med('service', name, 'cpu_ms_per_ticket') / med('hello', name, 'cpu_ms_per_ticket'):.2f}x "
                  "(goal <= 3x)")
        if "hello" in kinds and "shap" in kinds:
            print(f"  {name}: service with TreeSHAP reasons / hello-world CPU per request = "
                  f"{med('shap', name, 'cpu_ms_per_ticket') / med('hello', name, 'cpu_ms_per_ticket'):.2f}x")
    if "service" in kinds:
        print(f"  batch100: service {med('service', 'batch100 c=2', 'tickets_per_s'):.0f} tickets/s "
              "(goal >= 15,000)" + (f"; mlflow {med('mlflow', 'batch100 c=2', 'tickets_per_s'):.0f} tickets/s"
                                    if "mlflow" in kinds else ""))


def restrict_labels(bundle, k: int):
    """The bundle scoring only its first k labels: their models, and only their label-history rates."""
    import copy
    import dataclasses

    kept = bundle.labels[:k]
    builder = copy.copy(bundle.builder)
    builder.label_history_ = {name: h for name, h in bundle.builder.label_histories.items()
                              if name in {label.name for label in kept}}
    return dataclasses.replace(bundle, labels=kept, builder=builder)


def time_scoring(bundle, tickets: list[dict], batch: int, min_seconds: float = 1.0) -> float:
    """Microseconds per ticket through features.online + bundle.online_score (warm text cache)."""
    from bundle.online_score import score_many
    from features.online import OnlineFeatures

    online = OnlineFeatures(bundle.builder)
    groups = [tickets[i:i + batch] for i in range(0, len(tickets) - batch + 1, batch)]
    for group in groups:  # warm-up: text cache, compiled path contributions
        score_many(bundle, online, group)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        for group in groups:
            score_many(bundle, online, group)
            n += len(group)
    return (time.perf_counter() - started) / n * 1e6


def measure_per_label(settings: Settings, tickets: list[dict], rounds: int) -> None:
    """Per-ticket scoring cost with 1..all labels, interleaved rounds, medians; prints the table."""
    from bundle.model import load_bundle

    bundle = load_bundle(settings.resolved_model_path)
    counts = list(range(1, len(bundle.labels) + 1))
    variants = {k: restrict_labels(bundle, k) for k in counts}
    times: dict[tuple[int, int], list[float]] = {}
    for _ in range(rounds):
        for k in counts:
            for batch in (1, 100):
                times.setdefault((k, batch), []).append(time_scoring(variants[k], tickets, batch))
    med = {key: float(np.median(v)) for key, v in times.items()}
    print(f"\nbundle {bundle.version}: {len(bundle.labels)} labels ({', '.join(lb.name for lb in bundle.labels)}); "
          f"{len(tickets)} tickets; in-process scoring path, medians of {rounds} interleaved rounds")
    print(f"{'labels':>6} {'last added':<20} {'us/ticket single':>17} {'us/ticket batch100':>19} "
          f"{'+us single':>11} {'+us batch':>10}")
    for k in counts:
        print(f"{k:>6} {bundle.labels[k - 1].name:<20} {med[(k, 1)]:17.1f} {med[(k, 100)]:19.1f} "
              f"{med[(k, 1)] - med[(1, 1)]:11.1f} {med[(k, 100)] - med[(1, 100)]:10.1f}")
    if len(counts) > 1:
        slope = {b: np.polyfit(counts, [med[(k, b)] for k in counts], 1)[0] for b in (1, 100)}
        print(f"cost per added label (least-squares slope over k = 1..{counts[-1]}): {slope[1]:.1f} us per single "
              f"ticket ({slope[1] / med[(1, 1)]:.0%} of one label's path), {slope[100]:.1f} us per ticket in "
              f"100-ticket batches ({slope[100] / med[(1, 100)]:.0%})")


def report_agreement(settings: Settings, tickets: list[dict]) -> None:
    """How often the served path contributions name the same top features as TreeSHAP."""
    from bundle.model import load_bundle
    from features.online import OnlineFeatures

    bundle = load_bundle(settings.resolved_model_path)
    features, _ = OnlineFeatures(bundle.builder).transform_many(tickets)
    path = bundle.score_features(features, reasons="path").top
    shap = bundle.score_features(features, reasons="shap").top
    same_first = float(np.mean(path[:, 0] == shap[:, 0]))
    overlap = float(np.mean([len(set(a) & set(b)) / path.shape[1] for a, b in zip(path, shap, strict=True)]))
    print(f"reasons on {len(tickets)} tickets: path vs TreeSHAP top-1 agreement {same_first:.1%}, "
          f"top-3 overlap {overlap:.1%}")


if __name__ == "__main__":
    main()
